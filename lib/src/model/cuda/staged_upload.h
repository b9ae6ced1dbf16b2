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
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "ctcal/model/sample_span.h"
#include "cuda_support.h"

namespace ctcal::cuda {

// Copies `bytes` with every core (one core moves ~8 GB/s from the page cache, PCIe takes ~25).
void parallel_copy(void* dst, const void* src, std::size_t bytes);

// Writes rows [first, first + count) of some [rows, width] source into out (count * row bytes).
using RowFill = std::function<void(int64_t first, int64_t count, void* out)>;

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
  // dst[rows * row_bytes] <- rows that `fill` writes straight into the ring (rows [0, rows) of
  // its source, whole rows per piece): what the host never needs to hold elsewhere.
  void produce(void* dst, int64_t rows, std::size_t row_bytes, const RowFill& fill);
  // Enqueues the piece being filled: after it, work ordered after the stream sees every copy.
  void flush();

 private:
  // Readies the piece being filled for device address d and `need` more bytes (flushing it when
  // d does not continue it or too little room is left; waiting until a fresh piece's last copy
  // has read it). Returns the room left in it.
  std::size_t prepare(unsigned char* d, std::size_t need);

  cudaStream_t stream_;
  PinnedBuffer ring_[kPieces];
  Event copied_[kPieces];     // piece i's last copy is done
  bool in_flight_[kPieces] = {};
  int current_ = 0;                       // the piece being filled
  std::size_t fill_ = 0;                  // its bytes so far
  unsigned char* target_ = nullptr;       // where they go on the device
};

// The resident hidden states' first trip up: a thread produces chunk after chunk of rows (the
// host's hidden states, or token embeddings made on the way) into `device` [tokens, hidden]
// through its own ring and stream, so layer 0's kernels start on chunk 0 while the rest is still
// on its way.
class HiddenUpload {
 public:
  // rows: writes fp32 rows [first, first + count) of the hidden states [tokens, width]; device:
  // where they go on the GPU. Called on the upload thread, with no other call at the same time.
  HiddenUpload(RowFill rows, float* device, int64_t width, const std::vector<SampleChunk>& chunks, int ordinal);
  ~HiddenUpload();  // waits for the thread and the copies
  HiddenUpload(const HiddenUpload&) = delete;
  HiddenUpload& operator=(const HiddenUpload&) = delete;
  // Makes `compute` wait for chunk i's rows; rethrows the thread's error.
  void wait_for(std::size_t i, cudaStream_t compute);

 private:
  void run(float* device, int64_t width, int ordinal);

  RowFill rows_;
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
