#pragma once
// Eigen aliases used by the forward pass. Everything is row-major so a [tokens, features]
// activation matrix has one token per contiguous row, as in PyTorch.
#include <Eigen/Core>

namespace ctcal {

using RowMatrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using RowMatrixD = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using Vector = Eigen::VectorXf;

}  // namespace ctcal
