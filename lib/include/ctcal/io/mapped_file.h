#pragma once
// A read-only memory map of a whole file. Weights are read through it so a checkpoint larger
// than RAM is paged in on demand and never copied wholesale.
#include <cstddef>
#include <filesystem>

namespace ctcal {

class MappedFile {
 public:
  explicit MappedFile(const std::filesystem::path& path);  // throws InputError
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const unsigned char* data() const { return data_; }
  std::size_t size() const { return size_; }
  const std::filesystem::path& path() const { return path_; }
  // Tells the kernel a byte range will not be needed soon (released after a layer is done).
  void release(std::size_t offset, std::size_t length) const;
  // Tells the kernel a byte range will be read soon (MADV_WILLNEED): it queues the disk reads and
  // returns when they are queued (tens of ms for 400 MB from a cold page cache, a page-cache
  // lookup when warm), before they complete.
  void prefetch(std::size_t offset, std::size_t length) const;

 private:
  std::filesystem::path path_;
  const unsigned char* data_ = nullptr;
  std::size_t size_ = 0;
};

}  // namespace ctcal
