#pragma once
// UTF-8 validation with replacement, as Python's bytes.decode("utf-8", errors="replace") does:
// each maximal invalid subpart (RFC 3629 / Unicode "best practice") becomes one U+FFFD. PCRE2
// matching with PCRE2_NO_UTF_CHECK requires valid UTF-8 (overlongs, surrogates and code points
// above U+10FFFF included): invalid input there is undefined behaviour.
#include <string>

namespace ctcal {

std::string sanitize_utf8(const std::string& s);

}  // namespace ctcal
