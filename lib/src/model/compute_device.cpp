#include "ctcal/model/compute_device.h"

#include <charconv>

#include "ctcal/error.h"

namespace ctcal {

std::string ComputeDevice::name() const { return is_cuda() ? "cuda:" + std::to_string(index) : "cpu"; }

ComputeDevice ComputeDevice::parse(std::string_view text, std::string_view flag) {
  ComputeDevice d;
  if (text == "cpu") return d;
  d.kind = Kind::kCuda;
  if (text == "cuda") return d;
  if (text.substr(0, 5) == "cuda:" && text.size() > 5) {
    const char* first = text.data() + 5;
    const char* last = text.data() + text.size();
    auto [end, ec] = std::from_chars(first, last, d.index);
    if (ec == std::errc() && end == last && d.index >= 0) return d;
  }
  throw UsageError(fmt::format("{} {}: expected cpu, cuda or cuda:N (N a device ordinal)", flag, text));
}

}  // namespace ctcal
