#pragma once
// What each number on the eval report means, in one place, so the page can be read without the
// README (a <dl class="defs"> with one <dt data-metric=…> per metric).
#include <string>

namespace ctcal {

std::string metric_definitions();

}  // namespace ctcal
