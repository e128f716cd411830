"""05 §4.1 / 02 §3.3: alpha-beta cost of all-reducing N bytes over P workers (Thakur et al. 2005; Patarasuk & Yuan 2009).
alpha = per-message latency, beta = seconds per byte (1/bandwidth)."""
import math
alpha, beta, N = 5e-6, 1 / 25e9, 4 * 1.0e9          # 5 us, 25 GB/s, 1e9 fp32 gradients = 4 GB
def ring(P):    return 2 * (P - 1) * alpha + 2 * (P - 1) / P * N * beta
def rec_dbl(P): return math.log2(P) * (alpha + N * beta)                 # recursive doubling (small messages)
def rabens(P):  return 2 * math.log2(P) * alpha + 2 * (P - 1) / P * N * beta   # rec. halving RS + rec. doubling AG
def ps1(P):     return 2 * (alpha + P * N * beta)                         # one server: P pushes in + P pulls out on its link
def psP(P):     return 2 * (alpha + (P - 1) / P * N * beta) * 1           # P co-located shards (each server owns N/P): ~ ring
print(f"{'P':>4} {'ring':>8} {'rec-dbl':>8} {'Rabenseif':>9} {'1 PS':>8} {'P-shard PS':>10}   [seconds]")
for P in (2, 4, 8, 16, 64, 256):
    print(f"{P:>4} {ring(P):8.3f} {rec_dbl(P):8.3f} {rabens(P):9.3f} {ps1(P):8.3f} {psP(P):10.3f}")
print("ring bandwidth term -> 2 N beta =", 2 * N * beta, "s as P grows: O(N beta), NOT O(P N beta)")
print("small message (N=4 KB), P=256: ring", 2*255*alpha + 2*255/256*4096*beta, " rec-dbl", 8*(alpha+4096*beta))
