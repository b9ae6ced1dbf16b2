#pragma once
// Host-to-device copies from pageable memory (the mmap'd checkpoint, the host's hidden states)
// that overlap the GPU's work. The GPU copies asynchronously only from page-locked memory, and
// page-locking a whole layer (~0.4 GB per slot for an 8B model) took ~0.3 s to allocate on the
// H200 machine, longer than the first layers' compute; a ring of a few small pinned pieces costs
// a few milliseconds: each piece is filled with every core and copied on the stream while the next
// one fills.
#include <condition_variable>
#include <cstddef>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#include "ctcal/model/sample_span.h"
#include "cuda_support.h"

namespace ctcal::cuda {

class StagedUpload {
 public:
  static constexpr std::size_t kPieceBytes = std::size_t{16} << 20;
  static constexpr int kPieces = 4;

  explicit StagedUpload(cudaStream_t stream);
  ~StagedUpload();  // waits for its copies: they read the ring
  StagedUpload(const StagedUpload&) = delete;
  StagedUpload& operator=(const StagedUpload&) = delete;
  // dst[0, bytes) <- src[0, bytes): returns once src is staged (it may then change). Copies to
  // consecutive device addresses share a piece (a layer's norms and biases are small); a piece
  // goes on the stream when it is full, when the next copy is not contiguous, or at flush().
  void copy(void* dst, const void* src, std::size_t bytes);
  // Enqueues the piece being filled: after it, work ordered after the stream sees every copy.
  void flush();

 private:
  cudaStream_t stream_;
  PinnedBuffer ring_[kPieces];
  Event copied_[kPieces];     // piece i's last copy is done
  bool in_flight_[kPieces] = {};
  int current_ = 0;                       // the piece being filled
  std::size_t fill_ = 0;                  // its bytes so far
  unsigned char* target_ = nullptr;       // where they go on the device
};

// The resident hidden states' first trip up: a thread copies chunk after chunk (rows of `hidden`
// into `device`, both [tokens, hidden]) through its own ring and stream, so layer 0's kernels
// start on chunk 0 while the rest is still on its way.
class HiddenUpload {
 public:
  // host: [tokens, width] fp32 rows; device: the same rows on the GPU.
  HiddenUpload(const float* host, float* device, int64_t width, const std::vector<SampleChunk>& chunks, int ordinal);
  ~HiddenUpload();  // waits for the thread and the copies
  HiddenUpload(const HiddenUpload&) = delete;
  HiddenUpload& operator=(const HiddenUpload&) = delete;
  // Makes `compute` wait for chunk i's rows; rethrows the thread's error.
  void wait_for(std::size_t i, cudaStream_t compute);
  // Recorded after chunk i's copies (once wait_for(i) returned): for timing the upload.
  cudaEvent_t done(std::size_t i) const { return done_[i].get(); }

 private:
  void run(const float* host, float* device, int64_t width, int ordinal);

  const std::vector<SampleChunk>& chunks_;
  Stream stream_;
  std::vector<Event> done_;  // [chunks]
  std::mutex mu_;
  std::condition_variable cv_;
  std::size_t issued_ = 0;  // chunks whose copies (and event) are enqueued
  bool stop_ = false;
  std::exception_ptr error_;
  std::thread thread_;
};

}  // namespace ctcal::cuda
