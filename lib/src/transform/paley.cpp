#include "ctcal/transform/paley.h"

#include "ctcal/transform/hadamard.h"

namespace ctcal {

namespace {

// q = p^k with p prime, or nullopt.
std::optional<std::pair<int64_t, int64_t>> prime_power(int64_t q) {
  if (q < 2) return std::nullopt;
  int64_t p = 2;
  while (p * p <= q && q % p != 0) ++p;
  if (q % p != 0) p = q;  // q is prime
  int64_t k = 0, r = q;
  while (r % p == 0) {
    r /= p;
    ++k;
  }
  if (r != 1) return std::nullopt;
  return std::make_pair(p, k);
}

// GF(p^k) elements are polynomials of degree < k over Z_p, encoded base p as integers 0..q-1.
class GaloisField {
 public:
  GaloisField(int64_t p, int64_t k) : p_(p), k_(k), q_(1) {
    for (int64_t i = 0; i < k; ++i) q_ *= p;
    if (k > 1) find_irreducible();
  }
  int64_t size() const { return q_; }
  int64_t sub(int64_t a, int64_t b) const {
    int64_t r = 0, m = 1;
    for (int64_t i = 0; i < k_; ++i, a /= p_, b /= p_, m *= p_) r += (((a % p_) - (b % p_) + p_) % p_) * m;
    return r;
  }
  int64_t mul(int64_t a, int64_t b) const {
    if (k_ == 1) return a * b % p_;
    std::vector<int64_t> x = digits(a), y = digits(b), prod(static_cast<std::size_t>(2 * k_ - 1), 0);
    for (int64_t i = 0; i < k_; ++i)
      for (int64_t j = 0; j < k_; ++j) prod[i + j] = (prod[i + j] + x[i] * y[j]) % p_;
    // Reduce modulo the monic irreducible polynomial (coefficients mod_[0..k-1], leading 1).
    for (int64_t d = 2 * k_ - 2; d >= k_; --d) {
      const int64_t c = prod[d];
      if (c == 0) continue;
      prod[d] = 0;
      for (int64_t i = 0; i < k_; ++i) prod[d - k_ + i] = ((prod[d - k_ + i] - c * mod_[i]) % p_ + p_) % p_;
    }
    int64_t r = 0, m = 1;
    for (int64_t i = 0; i < k_; ++i, m *= p_) r += prod[i] * m;
    return r;
  }

 private:
  std::vector<int64_t> digits(int64_t a) const {
    std::vector<int64_t> d(static_cast<std::size_t>(k_));
    for (auto& x : d) {
      x = a % p_;
      a /= p_;
    }
    return d;
  }
  // The first monic polynomial of degree k with no factor of degree <= k/2 (checked by brute
  // force: a product of two lower-degree polynomials would give a zero divisor).
  void find_irreducible() {
    for (int64_t code = 0; code < q_; ++code) {
      mod_ = digits(code);
      bool ok = true;
      for (int64_t a = 1; a < q_ && ok; ++a)
        for (int64_t b = a; b < q_ && ok; ++b)
          if (mul(a, b) == 0) ok = false;
      if (ok) return;
    }
  }
  int64_t p_, k_, q_;
  std::vector<int64_t> mod_;
};

// Jacobsthal matrix Q[i][j] = χ(a_i - a_j) over GF(q).
RowMatrixD jacobsthal(const GaloisField& f) {
  const int64_t q = f.size();
  std::vector<int> chi(static_cast<std::size_t>(q), -1);
  chi[0] = 0;
  for (int64_t x = 1; x < q; ++x) chi[static_cast<std::size_t>(f.mul(x, x))] = 1;
  RowMatrixD m(q, q);
  for (int64_t i = 0; i < q; ++i)
    for (int64_t j = 0; j < q; ++j) m(i, j) = chi[static_cast<std::size_t>(f.sub(i, j))];
  return m;
}

}  // namespace

namespace {
// 1 for Paley I, 2 for Paley II, 0 when neither constructs order k.
int paley_kind(int64_t k) {
  if (k < 4 || k % 4 != 0) return 0;
  if (prime_power(k - 1) && (k - 1) % 4 == 3) return 1;
  if (prime_power(k / 2 - 1) && (k / 2 - 1) % 4 == 1) return 2;
  return 0;
}
}  // namespace

std::optional<RowMatrixD> paley_hadamard(int64_t k) {
  const int kind = paley_kind(k);
  if (kind == 1) {
    if (auto pp = prime_power(k - 1)) {  // Paley I
      const int64_t q = k - 1;
      RowMatrixD qm = jacobsthal(GaloisField(pp->first, pp->second));
      RowMatrixD s = RowMatrixD::Zero(k, k);
      s.block(0, 1, 1, q).setOnes();
      s.block(1, 0, q, 1).setConstant(-1.0);
      s.block(1, 1, q, q) = qm;
      return RowMatrixD(RowMatrixD::Identity(k, k) + s);
    }
  }
  if (kind == 2) {
    const int64_t q = k / 2 - 1;
    if (auto pp = prime_power(q)) {  // Paley II
      RowMatrixD qm = jacobsthal(GaloisField(pp->first, pp->second));
      RowMatrixD c = RowMatrixD::Zero(q + 1, q + 1);
      c.block(0, 1, 1, q).setOnes();
      c.block(1, 0, q, 1).setOnes();
      c.block(1, 1, q, q) = qm;
      RowMatrixD h(k, k);
      for (int64_t i = 0; i <= q; ++i)
        for (int64_t j = 0; j <= q; ++j) {
          // c(i,j) ⊗ [[1,1],[1,-1]] off the diagonal; [[1,-1],[-1,-1]] on it (c(i,i) = 0).
          const double v = c(i, j);
          if (i == j) {
            h(2 * i, 2 * j) = 1; h(2 * i, 2 * j + 1) = -1; h(2 * i + 1, 2 * j) = -1; h(2 * i + 1, 2 * j + 1) = -1;
          } else {
            h(2 * i, 2 * j) = v; h(2 * i, 2 * j + 1) = v; h(2 * i + 1, 2 * j) = v; h(2 * i + 1, 2 * j + 1) = -v;
          }
        }
      return h;
    }
  }
  return std::nullopt;
}

std::vector<int64_t> paley_orders(int64_t max_k) {
  std::vector<int64_t> out;
  for (int64_t k = 4; k <= max_k; k += 4)
    if (!is_power_of_two(k) && paley_kind(k) != 0) out.push_back(k);
  return out;
}

}  // namespace ctcal
