#include "ctcal/model/observation.h"

namespace ctcal {

std::string_view site_name(Site s) {
  switch (s) {
    case Site::kQuery: return "q";
    case Site::kKey: return "k";
    case Site::kValue: return "v";
    case Site::kAttnInput: return "attn_in";
    case Site::kAttnOutput: return "attn_out";
    case Site::kMlpInput: return "mlp_in";
    case Site::kMlpHidden: return "mlp_hidden";
  }
  return "?";
}

}  // namespace ctcal
