#pragma once
// Data-parallel ranks: `mpirun -np N ctcal calibrate ...` splits the samples across N processes,
// each runs every layer over its share, and per layer the observers' statistics are combined
// (all-reduce). Without mpirun (or in a build without MPI) there is one rank and nothing here
// touches MPI, so the single-process path has no MPI state at all.
#include <cstdint>
#include <vector>

namespace ctcal {

class Ranks {
 public:
  // Initialises MPI when the process was started by mpirun (Open MPI / PMIx environment);
  // otherwise one rank. Call once, first thing in main.
  static void init(int* argc, char*** argv);
  // Finalises MPI if init started it.
  static void finalize();
  // Ends every rank at once after an error on one of them (otherwise the others would wait in
  // the next all-reduce forever). No-op with one rank.
  [[noreturn]] static void abort(int exit_code);

  static int rank();
  static int size();
  static bool root() { return rank() == 0; }
  // This process's rank among the ranks on its host (Open MPI's OMPI_COMM_WORLD_LOCAL_RANK;
  // 0 without mpirun): picks its GPU.
  static int local_rank();

  // Element-wise minimum / maximum over every rank, in place. Exact (no arithmetic), so the
  // result does not depend on the number of ranks.
  static void min_in_place(std::vector<double>* v);
  static void max_in_place(std::vector<double>* v);
  static int64_t sum(int64_t v);
};

// This rank's share of `n` items: [first, last), contiguous blocks in order (rank 0 first).
struct RankSlice {
  std::size_t first = 0, last = 0;
};
RankSlice rank_slice(std::size_t n, int rank, int size);

}  // namespace ctcal
