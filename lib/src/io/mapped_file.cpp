#include "ctcal/io/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "ctcal/error.h"

namespace ctcal {

MappedFile::MappedFile(const std::filesystem::path& path) : path_(path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    throw InputError(fmt::format("{}: cannot open: {}", path.string(), std::strerror(errno)));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw InputError(fmt::format("{}: not a regular file", path.string()));
  }
  size_ = static_cast<std::size_t>(st.st_size);
  if (size_ > 0) {
    void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      int err = errno;
      ::close(fd);
      throw InputError(fmt::format("{}: cannot map: {}", path.string(), std::strerror(err)));
    }
    data_ = static_cast<const unsigned char*>(p);
  }
  ::close(fd);
}

MappedFile::~MappedFile() {
  if (data_) ::munmap(const_cast<unsigned char*>(data_), size_);
}

void MappedFile::release(std::size_t offset, std::size_t length) const {
  if (!data_ || length == 0) return;
  long page = ::sysconf(_SC_PAGESIZE);
  std::size_t begin = offset / static_cast<std::size_t>(page) * static_cast<std::size_t>(page);
  std::size_t end = std::min(offset + length, size_);
  ::madvise(const_cast<unsigned char*>(data_) + begin, end - begin, MADV_DONTNEED);
}

void MappedFile::prefetch(std::size_t offset, std::size_t length) const {
  if (!data_ || length == 0) return;
  long page = ::sysconf(_SC_PAGESIZE);
  std::size_t begin = offset / static_cast<std::size_t>(page) * static_cast<std::size_t>(page);
  const std::size_t end = std::min(offset + length, size_);
  // One MADV_WILLNEED reads at most the device's read-ahead window (8 MB here; the kernel caps
  // it), so a tensor of hundreds of MB is asked for in 4 MB pieces. A hint: errors do not matter.
  constexpr std::size_t kPiece = std::size_t{4} << 20;
  for (std::size_t at = begin; at < end; at += kPiece)
    ::madvise(const_cast<unsigned char*>(data_) + at, std::min(kPiece, end - at), MADV_WILLNEED);
}

}  // namespace ctcal
