#include "ctcal/model/observation.h"

namespace ctcal {

std::string_view site_name(Site s) {
  switch (s) {
    case Site::kQuery: return "q";
    case Site::kKey: return "k";
    case Site::kValue: return "v";
  }
  return "?";
}

}  // namespace ctcal
