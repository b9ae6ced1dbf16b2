#include "ctcal/util/ranks.h"

#include <cstdlib>
#include <limits>

#ifdef CTCAL_HAVE_MPI
#include <mpi.h>
#endif

namespace ctcal {

namespace {
bool g_mpi = false;  // MPI_Init ran
int g_rank = 0, g_size = 1;
}  // namespace

void Ranks::init(int* argc, char*** argv) {
#ifdef CTCAL_HAVE_MPI
  // Only under mpirun: a plain `ctcal` never initialises MPI (no runtime start-up, no sockets).
  const bool launched = std::getenv("OMPI_COMM_WORLD_SIZE") || std::getenv("PMIX_RANK") || std::getenv("PMI_SIZE");
  if (!launched) return;
  MPI_Init(argc, argv);
  g_mpi = true;
  MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
  MPI_Comm_size(MPI_COMM_WORLD, &g_size);
#else
  (void)argc;
  (void)argv;
#endif
}

void Ranks::finalize() {
#ifdef CTCAL_HAVE_MPI
  if (g_mpi) MPI_Finalize();
  g_mpi = false;
#endif
}

void Ranks::abort(int exit_code) {
#ifdef CTCAL_HAVE_MPI
  if (g_mpi && g_size > 1) MPI_Abort(MPI_COMM_WORLD, exit_code);
#endif
  std::exit(exit_code);
}

int Ranks::rank() { return g_rank; }
int Ranks::size() { return g_size; }

void Ranks::min_in_place(std::vector<double>* v) {
#ifdef CTCAL_HAVE_MPI
  if (g_size > 1)
    MPI_Allreduce(MPI_IN_PLACE, v->data(), static_cast<int>(v->size()), MPI_DOUBLE, MPI_MIN, MPI_COMM_WORLD);
#else
  (void)v;
#endif
}

void Ranks::max_in_place(std::vector<double>* v) {
#ifdef CTCAL_HAVE_MPI
  if (g_size > 1)
    MPI_Allreduce(MPI_IN_PLACE, v->data(), static_cast<int>(v->size()), MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
#else
  (void)v;
#endif
}

int64_t Ranks::sum(int64_t v) {
#ifdef CTCAL_HAVE_MPI
  if (g_size > 1) {
    long long x = v, out = 0;
    MPI_Allreduce(&x, &out, 1, MPI_LONG_LONG, MPI_SUM, MPI_COMM_WORLD);
    return out;
  }
#endif
  return v;
}

RankSlice rank_slice(std::size_t n, int rank, int size) {
  const auto r = static_cast<std::size_t>(rank), s = static_cast<std::size_t>(size);
  return {n * r / s, n * (r + 1) / s};
}

int Ranks::local_rank() {
  const char* v = std::getenv("OMPI_COMM_WORLD_LOCAL_RANK");
  return v && size() > 1 ? std::atoi(v) : 0;
}

}  // namespace ctcal
