#include "ctcal/model/cuda_backend.h"

// What both builds share of the CUDA backend's entry points (model/cuda_backend.h); the others are
// in lib/src/model/cuda/ (with -DCTCAL_CUDA=ON) or cuda_absent.cpp (without).

namespace ctcal {

bool cuda_backend_built() {
#ifdef CTCAL_HAVE_CUDA
  return true;
#else
  return false;
#endif
}

}  // namespace ctcal
