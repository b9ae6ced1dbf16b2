#include "ctcal/util/utf8.h"

namespace ctcal {

std::string sanitize_utf8(const std::string& s) {
  static const std::string kReplacement = "\xEF\xBF\xBD";
  std::string out;
  out.reserve(s.size());
  const auto byte = [&](std::size_t i) { return static_cast<unsigned char>(s[i]); };
  std::size_t i = 0;
  while (i < s.size()) {
    const unsigned char c = byte(i);
    if (c < 0x80) {
      out += static_cast<char>(c);
      ++i;
      continue;
    }
    // Length and the allowed range of the second byte for each valid lead byte.
    std::size_t need = 0;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) need = 1;
    else if (c == 0xE0) { need = 2; lo = 0xA0; }
    else if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF) need = 2;
    else if (c == 0xED) { need = 2; hi = 0x9F; }  // no surrogates
    else if (c == 0xF0) { need = 3; lo = 0x90; }   // no overlongs
    else if (c >= 0xF1 && c <= 0xF3) need = 3;
    else if (c == 0xF4) { need = 3; hi = 0x8F; }   // <= U+10FFFF
    if (need == 0) {  // 0x80-0xC1, 0xF5-0xFF: never a lead byte
      out += kReplacement;
      ++i;
      continue;
    }
    std::size_t ok = 0;  // valid continuation bytes after the lead
    while (ok < need && i + 1 + ok < s.size()) {
      const unsigned char b = byte(i + 1 + ok);
      const bool valid = ok == 0 ? (b >= lo && b <= hi) : (b >= 0x80 && b <= 0xBF);
      if (!valid) break;
      ++ok;
    }
    if (ok == need) {
      out.append(s, i, need + 1);
    } else {
      out += kReplacement;  // the maximal invalid subpart: lead + its valid continuations
    }
    i += ok == need ? need + 1 : ok + 1;
  }
  return out;
}

}  // namespace ctcal
