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

  // fn(part) for part in [0, parts), parts <= size(); the caller runs part 0. A call made
  // while another is running (two MindSpore threads) runs all its parts on the caller.
  void run(int parts, const std::function<void(int)>& fn) {
    std::unique_lock<std::mutex> call(call_mutex_, std::try_to_lock);
    if (parts <= 1 || !call.owns_lock()) {
      for (int p = 0; p < parts; ++p) fn(p);
      return;
    }
    {
      std::lock_guard<std::mutex> lock(mutex_);
      task_ = &fn;
      parts_ = parts;
      next_ = 1;
      pending_ = parts - 1;
      ++generation_;
    }
    wake_.notify_all();
    fn(0);
    std::unique_lock<std::mutex> lock(mutex_);
    done_.wait(lock, [this] { return pending_ == 0; });
  }

 private:
  explicit ThreadPool(int threads) : helpers_(threads - 1) {
    for (int i = 0; i < helpers_; ++i) std::thread([this] { work(); }).detach();
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

  void work() {
    uint64_t seen = 0;
    std::unique_lock<std::mutex> lock(mutex_);
    for (;;) {
      wake_.wait(lock, [&] { return generation_ != seen; });
      seen = generation_;
      if (next_ >= parts_) continue;
      const int part = next_++;
      const std::function<void(int)>* task = task_;
      lock.unlock();
      (*task)(part);
      lock.lock();
      if (--pending_ == 0) done_.notify_one();
    }
  }

  const int helpers_;
  std::mutex call_mutex_;
  std::mutex mutex_;
  std::condition_variable wake_, done_;
  const std::function<void(int)>* task_ = nullptr;
  uint64_t generation_ = 0;
  int parts_ = 0, next_ = 0, pending_ = 0;
};

// body(part, begin, end) over [0, n) in contiguous static parts: one part when n < min_split,
// else one per thread.
template <class Body>
void parallel_for(int64_t n, int64_t min_split, Body&& body) {
  ThreadPool& pool = ThreadPool::instance();
  const int parts = n < min_split ? 1 : static_cast<int>(pool.size() < n ? pool.size() : n);
  if (parts <= 1) {
    body(0, int64_t{0}, n);
    return;
  }
  pool.run(parts, [&](int p) { body(p, n * p / parts, n * (p + 1) / parts); });
}

// The number of parts parallel_for(n, min_split, ...) makes (for per-part accumulators).
inline int parallel_parts(int64_t n, int64_t min_split) {
  if (n < min_split) return 1;
  const int threads = ThreadPool::instance().size();
  return static_cast<int>(threads < n ? threads : n);
}

}  // namespace msmm
