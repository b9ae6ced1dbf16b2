#include "ctcal/model/sample_span.h"

namespace ctcal {

std::vector<SampleChunk> make_chunks(const std::vector<SampleSpan>& spans, int64_t chunk_tokens) {
  std::vector<SampleChunk> chunks;
  for (std::size_t f = 0; f < spans.size();) {
    SampleChunk c;
    c.first = f;
    c.r0 = spans[f].offset;
    std::size_t l = f;
    while (l < spans.size() && (l == f || c.n + spans[l].length <= chunk_tokens)) c.n += spans[l++].length;
    c.last = l;
    for (std::size_t s = f; s < l; ++s) c.spans.push_back({spans[s].offset - c.r0, spans[s].length});
    chunks.push_back(std::move(c));
    f = l;
  }
  return chunks;
}

}  // namespace ctcal
