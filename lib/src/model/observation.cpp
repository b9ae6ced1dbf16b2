#include "ctcal/model/observation.h"

namespace ctcal {

std::string_view site_name(Site s) {
  switch (s) {
    case Site::kQuery: return "q";
    case Site::kKey: return "k";
    case Site::kValue: return "v";
    case Site::kKeyPreRope: return "k_pre_rope";
    case Site::kQkvInput: return "qkv_input";
    case Site::kOProjInput: return "o_proj_input";
    case Site::kGateUpInput: return "gate_up_input";
    case Site::kDownInput: return "down_input";
    case Site::kExpertGateUpInput: return "expert_gate_up_input";
    case Site::kExpertDownInput: return "expert_down_input";
    case Site::kMambaInProjInput: return "mamba_in_proj_input";
    case Site::kMambaOutProjInput: return "mamba_out_proj_input";
  }
  return "?";
}

}  // namespace ctcal
