#pragma once
// A growable array whose new elements are left uninitialised. Scratch buffers of the forward
// pass are always written before they are read; zero-filling them (std::vector::resize) cost a
// full extra pass over up to hundreds of MB, and untouched pages (the bf16 buffer in fp32 mode)
// stay out of the resident set. Aligned to 64 bytes: vectorised Eigen expressions peel the
// elements before the first aligned address and treat them with scalar code (a different exp,
// a different summation order), so a buffer's alignment must not depend on which thread or
// allocation it came from, or results would depend on the thread count.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>

namespace ctcal {

template <typename T>
class UninitBuffer {
 public:
  // Room for at least n elements; contents are lost when it grows.
  T* fit(int64_t n) {
    if (size_ < n) {
      // default-initialised: no zeroing
      data_.reset(new (std::align_val_t(kAlign)) T[static_cast<std::size_t>(n)]);
      size_ = n;
    }
    return data_.get();
  }
  T* data() { return data_.get(); }
  int64_t size() const { return size_; }

 private:
  static constexpr std::size_t kAlign = 64;
  struct AlignedDelete {
    void operator()(T* p) const { ::operator delete[](p, std::align_val_t(kAlign)); }
  };
  std::unique_ptr<T[], AlignedDelete> data_;
  int64_t size_ = 0;
};

}  // namespace ctcal
