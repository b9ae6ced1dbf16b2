#include "ctcal/report/metric_definitions.h"

namespace ctcal {

std::string metric_definitions() {
  // The formulas are what lib/src/eval computes; keep them in step with it.
  return "<dl class=\"defs\">"
         "<dt data-metric=\"nll\">NLL</dt><dd>Mean negative log-likelihood of the next token, in nats: "
         "−(1/N) Σ log p(x<sub>t+1</sub> | x<sub>≤t</sub>) over every predicted position of every held-out sample "
         "(N = predicted tokens). Lower is better.</dd>"
         "<dt data-metric=\"delta_nll\">&Delta;NLL</dt><dd>The run's NLL minus the unquantized baseline's on the same "
         "tokens: what quantization costs. 0 = no cost; positive = worse.</dd>"
         "<dt data-metric=\"ppl\">PPL</dt><dd>Perplexity, exp(NLL).</dd>"
         "<dt data-metric=\"kl\">KL(baseline&#8214;quantized)</dt><dd>Mean over predicted positions of "
         "Σ<sub>v</sub> p<sub>base</sub>(v) (log p<sub>base</sub>(v) − log p<sub>quant</sub>(v)), in nats: how far the "
         "quantized model's next-token distribution moved from the baseline's, whatever the true token. 0 = identical.</dd>"
         "<dt data-metric=\"top1\">top-1 agreement</dt><dd>Share of positions where the quantized model's most likely "
         "next token is the baseline's. 1 = always.</dd>"
         "<dt data-metric=\"sqnr\">SQNR</dt><dd>Signal-to-quantization-noise ratio of one layer's keys (K), values (V) or "
         "queries (Q), in dB: 10 log<sub>10</sub>(Σx² / Σ(x − x̂)²) over every element the layer quantized on the "
         "held-out text, x̂ being x fake-quantized with the run's scale (and zero point) as vLLM applies it. Higher is "
         "better; each bit of the format adds about 6 dB.</dd>"
         "</dl>";
}

}  // namespace ctcal
