// Naive dense attention in double: the oracle the CPU backend is tested against.
// One (sequence, head) at a time; all inputs are already the values the kernel sees (rounded to
// the storage dtype). Written independently of csrc/cpu (only philox.h is shared, for dropout).
#pragma once

#include <functional>
#include <vector>

namespace ref {

struct HeadSpec {
  int seqlen_q = 0, seqlen_k = 0, head_dim = 0;
  int window_left = -1, window_right = -1;  // causal: window_right = 0
  double scale = 1.0;
  double softcap = 0.0;
  double alibi_slope = 0.0;
  double dropout_p = 0.0;
  std::function<bool(int, int)> keep;  // dropout mask (kept?) when dropout_p > 0
  std::vector<char> key_valid;         // optional: 0 marks a key that must be invisible
};

struct HeadForward {
  std::vector<double> out;    // seqlen_q x head_dim
  std::vector<double> lse;    // seqlen_q (+inf for rows that see nothing)
  std::vector<double> probs;  // seqlen_q x seqlen_k: P, negated where dropped, 0 invisible
};

struct HeadGrads {
  std::vector<double> dq, dk, dv;
};

bool visible(const HeadSpec& s, int i, int j);

// q: seqlen_q x d, k/v: seqlen_k x d (row-major).
HeadForward forward(const HeadSpec& s, const std::vector<double>& q, const std::vector<double>& k,
                    const std::vector<double>& v);

// Analytic gradients of sum(out * dout).
HeadGrads backward(const HeadSpec& s, const std::vector<double>& q, const std::vector<double>& k,
                   const std::vector<double>& v, const std::vector<double>& dout);

// Rotary in double: x (d values), rotates the first rotary_dim with cos/sin (rotary_dim / 2).
void rotary(std::vector<double>& x, const std::vector<double>& cos_row,
            const std::vector<double>& sin_row, int rotary_dim, bool interleaved);

}  // namespace ref
