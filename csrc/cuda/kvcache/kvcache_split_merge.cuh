// Single-launch split-KV combine: the attention CTA that finishes last among the splits of one
// (sequence, kv head, m-tile) merges their partial rows, so a split decode is one kernel launch
// (no second launch, no wait for the whole grid: a group is merged as soon as its own splits are
// done, while other groups still stream).
//
// Protocol (as in cooperative groups' grid sync): every CTA writes its partial rows, a barrier,
// then thread 0 fences (cumulative: the whole CTA's stores reach L2 first) and takes a ticket with
// atomicAdd. The CTA that draws splits - 1 saw every other CTA's fence-then-ticket, so their
// partials are visible; it fences again (acquire side), reads them at L2 (ld.cg) and resets the
// counter to 0, which the next kernel on the stream relies on (counters start zeroed).
//
// Included by kvcache_attn_kernel.cuh after kvcache_ptx.cuh (ElemTraits, load_cg, ticket_arrive,
// fence_device); the host emulation substitutes its own versions of those, so this header does
// not include the PTX one itself.
#pragma once

#include <cmath>
#include <cstdint>

#include "common/split_combine.h"
#include "cuda/kvcache/kvcache_args.h"

namespace flash::kvcache_cuda {

// Dynamic smem the merge uses (the K/V region, free by then): the "last CTA" flag.
constexpr int kMergeSmemBytes = 4;

// Called by all threads of an attention CTA after its partial rows are written (splits > 1,
// a.tickets != nullptr). `smem` may be overwritten (the caller is done with it).
template <typename Elem, int D>
__device__ __forceinline__ void merge_splits_if_last(const AttnArgs& a, unsigned char* smem,
                                                     int b, int hk, int m_tile, int p0,
                                                     int p_end) {
  using T = ElemTraits<Elem>;
  const int tid = threadIdx.x;
  int* s_last = reinterpret_cast<int*>(smem);

  // The barrier orders every thread's partial stores before thread 0's fence, and fences are
  // cumulative, so one fence by thread 0 publishes the whole CTA's stores before its ticket (the
  // pattern of cooperative groups' grid sync); likewise its second fence + the barrier make the
  // other CTAs' partials visible to all threads of the merging CTA.
  __syncthreads();  // all partial stores issued; everyone is done reading smem (the O merge)
  if (tid == 0) {
    const int64_t group = (static_cast<int64_t>(b) * a.nheads_k + hk) * a.m_tiles + m_tile;
    fence_device();
    const unsigned arrived = ticket_arrive(a.tickets + group);
    const bool last = arrived == static_cast<unsigned>(a.splits - 1);
    if (last) {
      a.tickets[group] = 0u;  // all splits of this group have arrived: reusable by the next call
      fence_device();         // acquire side: the partials read below are not older than the ticket
    }
    *s_last = last;
  }
  __syncthreads();
  if (!*s_last) return;

  // One pass per (row, 4-dim group), online over the splits like the softmax itself: a batch of
  // kBatch splits has its lse_s and O_s loads all in flight together (one L2 round trip per batch,
  // no shared-memory weights, no barrier), then the running max is raised and
  //   acc = sum_s exp(lse_s - m) O_s,  sum = sum_s exp(lse_s - m),  out = acc / sum,
  //   lse = m + log(sum)   (an empty split has lse_s = -inf: weight 0; all empty: lse -inf, out 0).
  // Threads of one row read the same lse_s (a broadcast within the warp).
  // 16 splits per round trip (32-split decode: 2). At D = 32 the kernel is otherwise light
  // (78 registers) and 16 would raise it to ~214, costing occupancy: 8 there.
  constexpr int kBatch = D <= 32 ? 8 : 16;
  const int64_t rows_total = static_cast<int64_t>(a.batch) * a.nheads * a.seqlen_q;
  const int64_t split_stride4 = rows_total * a.head_dim / 4;  // float4s between splits
  const int cols = a.head_dim / 4;
  const int items = (p_end - p0) * cols;
#pragma unroll 1  // the batch below is what should be in flight; unrolling this costs registers
  for (int it = tid; it < items; it += kThreads) {
    const int r = it / cols, c = it % cols;
    const int p = p0 + r;
    const int i = p / a.group, h = hk * a.group + p % a.group;
    const int64_t row = (static_cast<int64_t>(b) * a.nheads + h) * a.seqlen_q + i;
    const float* lse_src = a.part_lse + row;
    const float4* o_src = reinterpret_cast<const float4*>(a.part_o + row * a.head_dim) + c;
    float m = -INFINITY, sum = 0.f;
    float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll 1
    for (int s0 = 0; s0 < a.splits; s0 += kBatch) {
      float ls[kBatch];
      float4 x[kBatch];
#pragma unroll
      for (int u = 0; u < kBatch; ++u) {
        const bool in = s0 + u < a.splits;
        ls[u] = in ? load_cg(lse_src + (s0 + u) * rows_total) : -INFINITY;
        x[u] = in ? load_cg(o_src + (s0 + u) * split_stride4) : make_float4(0.f, 0.f, 0.f, 0.f);
      }
      float m_new = m;
#pragma unroll
      for (int u = 0; u < kBatch; ++u) m_new = fmaxf(m_new, ls[u]);
      if (m_new == -INFINITY) continue;  // every split so far is empty
      const float rescale = expf(m - m_new);  // 0 when m is still -inf (acc, sum are 0 then)
      sum *= rescale;
      acc.x *= rescale;
      acc.y *= rescale;
      acc.z *= rescale;
      acc.w *= rescale;
#pragma unroll
      for (int u = 0; u < kBatch; ++u) {
        const float e = expf(ls[u] - m_new);  // 0 for empty / missing splits
        sum += e;
        acc.x += e * x[u].x;
        acc.y += e * x[u].y;
        acc.z += e * x[u].z;
        acc.w += e * x[u].w;
      }
      m = m_new;
    }
    const float inv = sum > 0.f ? 1.f / sum : 0.f;
    uint2 packed;
    packed.x = T::pack2(acc.x * inv, acc.y * inv);
    packed.y = T::pack2(acc.z * inv, acc.w * inv);
    Elem* dst = static_cast<Elem*>(a.out) + b * a.o_bs + i * a.o_rs + h * a.o_hs + c * 4;
    *reinterpret_cast<uint2*>(dst) = packed;
    if (c == 0) {
      a.lse[b * a.lse_bs + h * a.lse_hs + i] = public_lse(m == -INFINITY ? -INFINITY : m + logf(sum));
    }
  }
}

}  // namespace flash::kvcache_cuda
