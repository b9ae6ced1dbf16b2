#include "ctcal/transform/rotate_weights.h"

#include "ctcal/error.h"

namespace ctcal {

void rotate_output_rows(std::vector<double>* w, int64_t rows, int64_t cols, const RowMatrixD& h) {
  const int64_t d = h.rows();
  CTCAL_ASSERT(rows % d == 0, "rows must be a multiple of the block size");
  Eigen::Map<RowMatrixD> m(w->data(), rows, cols);
  for (int64_t b = 0; b < rows; b += d) {
    RowMatrixD blk = h.transpose() * m.middleRows(b, d);  // [d, cols]
    m.middleRows(b, d) = blk;
  }
}

void rotate_input_cols(std::vector<double>* w, int64_t rows, int64_t cols, const RowMatrixD& h) {
  const int64_t d = h.rows();
  CTCAL_ASSERT(cols % d == 0, "cols must be a multiple of the block size");
  Eigen::Map<RowMatrixD> m(w->data(), rows, cols);
  for (int64_t b = 0; b < cols; b += d) {
    RowMatrixD blk = m.middleCols(b, d) * h;  // [rows, d]
    m.middleCols(b, d) = blk;
  }
}

}  // namespace ctcal
