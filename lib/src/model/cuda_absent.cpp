// The CUDA backend's entry points in a build without -DCTCAL_CUDA=ON: each says so. (With CUDA,
// CMake compiles lib/src/model/cuda/ instead of this file.)
#include "ctcal/error.h"
#include "ctcal/model/cuda_backend.h"

namespace ctcal {

namespace {
[[noreturn]] void no_cuda(int index) {
  throw UsageError(fmt::format("--device cuda:{}: this ctcal was built without the CUDA backend; rebuild with "
                               "cmake -DCTCAL_CUDA=ON (needs the CUDA toolkit), or use --device cpu", index));
}
}  // namespace

int cuda_device_for_local_rank(int) { return 0; }
std::string cuda_device_description(int index) { no_cuda(index); }
void cuda_open_device(int index) { no_cuda(index); }
void check_cuda_supports(const ModelConfig&, const ForwardOptions& options) { no_cuda(options.device.index); }
std::unique_ptr<LayerBackend> make_cuda_layers(const Decoder&, const std::vector<SampleSpan>&, const LayerLoop&,
                                               const ForwardOptions& options) {
  no_cuda(options.device.index);
}

}  // namespace ctcal
