#include "staged_upload.h"

#include <algorithm>
#include <cstring>

#include "ctcal/error.h"

namespace ctcal::cuda {

void parallel_copy(void* dst, const void* src, std::size_t bytes) {
  constexpr std::size_t kPart = std::size_t{1} << 20;
  const auto parts = static_cast<int64_t>((bytes + kPart - 1) / kPart);
  auto* d = static_cast<unsigned char*>(dst);
  const auto* s = static_cast<const unsigned char*>(src);
#pragma omp parallel for schedule(static) if (parts > 1)
  for (int64_t i = 0; i < parts; ++i) {
    const std::size_t off = static_cast<std::size_t>(i) * kPart;
    std::memcpy(d + off, s + off, std::min(kPart, bytes - off));
  }
}

StagedUpload::StagedUpload(cudaStream_t stream) : stream_(stream) {
  for (auto& piece : ring_) piece.resize(kPieceBytes);
}

StagedUpload::~StagedUpload() {
  for (int i = 0; i < kPieces; ++i)
    if (in_flight_[i]) cudaEventSynchronize(copied_[i].get());
}

std::size_t StagedUpload::prepare(unsigned char* d, std::size_t need) {
  if (fill_ > 0 && (d != target_ + fill_ || kPieceBytes - fill_ < need)) flush();
  if (fill_ == 0) {  // start a piece: wait until its previous copy has read it
    if (in_flight_[current_]) check(cudaEventSynchronize(copied_[current_].get()), "waiting for a staging piece");
    in_flight_[current_] = false;
    target_ = d;
  }
  return kPieceBytes - fill_;
}

void StagedUpload::copy(void* dst, const void* src, std::size_t bytes) {
  auto* d = static_cast<unsigned char*>(dst);
  const auto* s = static_cast<const unsigned char*>(src);
  while (bytes > 0) {
    const std::size_t n = std::min(bytes, prepare(d, 1));
    parallel_copy(ring_[current_].get() + fill_, s, n);
    fill_ += n;
    d += n;
    s += n;
    bytes -= n;
  }
}

void StagedUpload::produce(void* dst, int64_t rows, std::size_t row_bytes, const RowFill& fill) {
  CTCAL_ASSERT(row_bytes > 0 && row_bytes <= kPieceBytes, "a row must fit in a staging piece");
  auto* d = static_cast<unsigned char*>(dst);
  for (int64_t first = 0; first < rows;) {
    const auto count = std::min<int64_t>(rows - first, static_cast<int64_t>(prepare(d, row_bytes) / row_bytes));
    fill(first, count, ring_[current_].get() + fill_);
    const std::size_t n = static_cast<std::size_t>(count) * row_bytes;
    fill_ += n;
    d += n;
    first += count;
  }
}

void StagedUpload::flush() {
  if (fill_ == 0) return;
  check(cudaMemcpyAsync(target_, ring_[current_].get(), fill_, cudaMemcpyHostToDevice, stream_), "copying to the GPU");
  check(cudaEventRecord(copied_[current_].get(), stream_), "cudaEventRecord");
  in_flight_[current_] = true;
  current_ = (current_ + 1) % kPieces;
  fill_ = 0;
}

HiddenUpload::HiddenUpload(RowFill rows, float* device, int64_t width, const std::vector<SampleChunk>& chunks,
                           int ordinal)
    : rows_(std::move(rows)), chunks_(chunks), done_(chunks.size()) {
  thread_ = std::thread([=, this] { run(device, width, ordinal); });
}

HiddenUpload::~HiddenUpload() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  thread_.join();
  cudaStreamSynchronize(stream_.get());  // no copy may outlive the ring or the host rows
}

void HiddenUpload::run(float* device, int64_t width, int ordinal) {
  try {
    check(cudaSetDevice(ordinal), "cudaSetDevice (upload thread)");
    StagedUpload up(stream_.get());
    for (std::size_t i = 0; i < chunks_.size(); ++i) {
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (stop_) return;
      }
      const SampleChunk& ch = chunks_[i];
      up.produce(device + ch.r0 * width, ch.n, static_cast<std::size_t>(width) * sizeof(float),
                 [&](int64_t first, int64_t count, void* out) { rows_(ch.r0 + first, count, out); });
      up.flush();
      check(cudaEventRecord(done_[i].get(), stream_.get()), "cudaEventRecord");
      {
        std::lock_guard<std::mutex> lock(mu_);
        issued_ = i + 1;
      }
      cv_.notify_all();
    }
  } catch (...) {
    std::lock_guard<std::mutex> lock(mu_);
    error_ = std::current_exception();
    cv_.notify_all();
  }
}

void HiddenUpload::wait_for(std::size_t i, cudaStream_t compute) {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [&] { return error_ || issued_ > i; });
  if (issued_ <= i) std::rethrow_exception(error_);
  check(cudaStreamWaitEvent(compute, done_[i].get(), 0), "cudaStreamWaitEvent");
}

}  // namespace ctcal::cuda
