// Opt-in code variants of the lean sm90 forward kernel (no softcap / ALiBi / dropout), selected per
// call by tuning switches (fwd_tuning.h) for A/B measurements on the H100. Each combination is its
// own kernel instantiation (fwd_launch.h), so variant 0 is the default kernel's code unchanged.
#pragma once

namespace flash::sm90 {

// FLASH_SM90_FWD_WIDE_STORE=1: O stored 16 bytes at a time after a quad transpose (fwd_consumer.h).
constexpr int kFwdVariantWideStore = 1;
// FLASH_SM90_FWD_ILP_SOFTMAX=1: row max and row sum with 4 independent partial results per row and
// both rows interleaved (fwd_softmax.h), instead of one serial chain per row.
constexpr int kFwdVariantIlpSoftmax = 2;
// FLASH_SM90_FWD_WG_SKIP=1 (192-row tile only): a consumer warpgroup passes the key blocks its own
// rows cannot see (causal diagonal, rows past seqlen_q) without GEMMs or softmax (fwd_consumer.h).
constexpr int kFwdVariantWgSkip = 4;
// FLASH_SM90_FWD_PIN_WAIT=1: the wait for P V(i) is pinned after the softmax of block i+1
// (fwd_consumer.h, order_before_wgmma_wait); without it ptxas hoists the wait above the softmax.
constexpr int kFwdVariantPinWait = 8;

}  // namespace flash::sm90
