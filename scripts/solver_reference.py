"""Plain PyTorch port of the LongMamba threshold solver (docs/method.md §3 steps 3-4).

Written from the method's description; it uses the same torch operations the authors' released
code uses (topk + clamp, sum, sort, F.interpolate(linear, align_corners=False), float32 cumsum,
argmax of the boolean mask, gather), so its float32 results are the reference for the Swift solver.

Per sample, layer, channel c (delta: [L, C] float32):
  k = max(1, int(L * p));  clamp at the k-th largest value
  D_c = sum_t clamped;      a_c = mean_n exp(A[c, n] * D_c)  (Mamba-2: exp(sum_t clamped_t * A_c))
  for S > L: y = interpolate(sort_desc(clamped), S); cum = cumsum(y)
             k* = argmax(cum > D) + 1; tau = y[min(k*, S-1)]; alpha = min(k*/S, 1)
  for S <= L: tau = 0, alpha = 1
"""
import torch
import torch.nn.functional as F


def solve_sample(delta, A, p, lengths, training_length=None):
    """delta: [L, C] float32, A: [C] or [C, N]. Returns dict of D [C], a [C], tau [T, C], alpha [T, C]."""
    L, C = delta.shape
    training_length = L if training_length is None else training_length
    d = delta.t().contiguous()  # [C, L]
    k = max(1, int(L * p))
    values, _ = torch.topk(d, k=k, dim=1, largest=True, sorted=False)
    d = torch.clamp(d, max=values.min(dim=1, keepdim=True).values)
    D = torch.sum(d, dim=1)  # float32 reduction, as torch.sum per channel
    if A.dim() == 1:
        # authors' tA_prod: exp of the last element of cumsum(delta * A)
        a = torch.exp(torch.cumsum(d * A.unsqueeze(1), dim=1)[:, -1])
    else:
        a = torch.exp(A * D.unsqueeze(1)).mean(dim=1)
    taus, alphas = [], []
    sorted_d = torch.sort(d, descending=True, dim=1)[0]
    for S in lengths:
        if S <= training_length or S <= L:
            taus.append(torch.zeros(C))
            alphas.append(torch.ones(C))
            continue
        y = F.interpolate(sorted_d.unsqueeze(1), size=int(S), mode='linear', align_corners=False).squeeze(1)
        cum = torch.cumsum(y, dim=1)
        top_k = torch.argmax((cum > D.unsqueeze(1)).to(torch.int), dim=1) + 1
        alpha = top_k / float(S)
        alpha = torch.where(alpha <= 1, alpha, torch.tensor(1.0))
        # top_k == S would index past the end (gather raises); clamp like the Swift solver.
        idx = torch.clamp(top_k, max=S - 1)
        tau = torch.gather(y, 1, idx.unsqueeze(1)).squeeze(1)
        taus.append(tau)
        alphas.append(alpha)
    return {"D": D, "a": a, "tau": torch.stack(taus), "alpha": torch.stack(alphas)}


def aggregate(results, how):
    """Element-wise max, or the authors' running mean (sum of value / K in float32)."""
    out = {}
    for key in results[0]:
        if how == "max":
            v = results[0][key].clone()
            for r in results[1:]:
                v = torch.maximum(v, r[key])
        else:
            K = len(results)
            v = results[0][key].clone() / K
            for r in results[1:]:
                v += r[key] / K
        out[key] = v
    return out
