// Splitting a kernel over the process's cores with helper threads that sleep between calls.
//
// Why not OpenMP: `import mindspore` loads libgomp before any kernel library can set
// OMP_WAIT_POLICY, and libgomp's default makes a worker spin ~3 ms after every parallel
// region (measured: 3.4 ms of CPU per region), stealing the core MindSpore runs its next
// kernel on. These helpers wait on a condition variable instead.
//
// Threads: the CPUs in the process's affinity mask (taskset, cgroups), capped by
// MSMM_KERNEL_THREADS if set. A forked child builds its own pool on first use.
#pragma once

#include <sched.h>
#include <unistd.h>

#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <mutex>
#include <thread>

namespace msmm {

class ThreadPool {
 public:
  static ThreadPool& instance() {
    static std::mutex guard;
    static ThreadPool* pool = nullptr;  // never destroyed: no joins at process exit
    static pid_t owner = 0;
    std::lock_guard<std::mutex> lock(guard);
    if (pool == nullptr || owner != getpid()) {
      pool = new ThreadPool(wanted_threads());
      owner = getpid();
    }
    return *pool;
  }

  int size() const { return helpers_ + 1; }

  // fn(worker, chunk) for every chunk in [0, chunks), worker in [0, size()): the caller is
  // worker 0 and takes chunks itself until none is left, so a helper that is not scheduled
  // in time (a busy machine) delays the call by at most the chunk it holds. A call made
  // while another is running (two MindSpore threads) runs all its chunks on the caller.
  void run(int chunks, const std::function<void(int, int)>& fn) {
    std::unique_lock<std::mutex> call(call_mutex_, std::try_to_lock);
    if (helpers_ == 0 || chunks <= 1 || !call.owns_lock()) {
      for (int c = 0; c < chunks; ++c) fn(0, c);
      return;
    }
    std::unique_lock<std::mutex> lock(mutex_);
    task_ = &fn;
    chunks_ = chunks;
    next_ = 0;
    completed_ = 0;
    ++generation_;
    wake_.notify_all();
    while (next_ < chunks_) {
      const int c = next_++;
      lock.unlock();
      fn(0, c);
      lock.lock();
      ++completed_;
    }
    done_.wait(lock, [this] { return completed_ == chunks_; });
  }

 private:
  explicit ThreadPool(int threads) : helpers_(threads - 1) {
    for (int i = 1; i <= helpers_; ++i) std::thread([this, i] { work(i); }).detach();
  }

  static int wanted_threads() {
    cpu_set_t set;
    int n = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : 1;
    if (const char* cap = std::getenv("MSMM_KERNEL_THREADS")) {
      const int c = std::atoi(cap);
      if (c > 0 && c < n) n = c;
    }
    return n > 0 ? n : 1;
  }

  void work(int worker) {
    uint64_t seen = 0;
    std::unique_lock<std::mutex> lock(mutex_);
    for (;;) {
      wake_.wait(lock, [&] { return generation_ != seen; });
      seen = generation_;
      while (generation_ == seen && next_ < chunks_) {  // claims under the lock: never a stale task
        const int c = next_++;
        const std::function<void(int, int)>* task = task_;
        lock.unlock();
        (*task)(worker, c);
        lock.lock();
        if (++completed_ == chunks_) done_.notify_one();
      }
    }
  }

  const int helpers_;
  std::mutex call_mutex_;
  std::mutex mutex_;
  std::condition_variable wake_, done_;
  const std::function<void(int, int)>* task_ = nullptr;
  uint64_t generation_ = 0;
  int chunks_ = 0, next_ = 0, completed_ = 0;
};

// The workers a parallel_for(n, min_split, ...) may use (for per-worker accumulators).
inline int parallel_workers(int64_t n, int64_t min_split) {
  return n < min_split ? 1 : ThreadPool::instance().size();
}

// body(worker, begin, end) over [0, n): all on the caller when n < min_split, else in
// kChunksPerWorker contiguous chunks per worker, each worker accumulating into its own slot.
constexpr int kChunksPerWorker = 4;

template <class Body>
void parallel_for(int64_t n, int64_t min_split, Body&& body) {
  const int workers = parallel_workers(n, min_split);
  const int64_t wanted = static_cast<int64_t>(workers) * kChunksPerWorker;
  const int chunks = static_cast<int>(workers == 1 ? 1 : (wanted < n ? wanted : n));
  if (chunks <= 1) {
    body(0, int64_t{0}, n);
    return;
  }
  ThreadPool::instance().run(chunks, [&](int worker, int c) { body(worker, n * c / chunks, n * (c + 1) / chunks); });
}

}  // namespace msmm
