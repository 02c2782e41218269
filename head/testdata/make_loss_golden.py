"""Golden values for the baseline losses of package head (loss.go), computed with PyTorch in float64.

usage: /usr/bin/python3 make_loss_golden.py > loss_golden.json   (Debian's python3-torch)

Each case holds embeddings z (n, e), logits (n, c), proxies (c, e), labels and settings, and per loss
the value and its gradients with respect to z, logits and proxies. The formulas are the reference
ones: softmax = F.cross_entropy; triplet = the batch-hard triplet loss of
shared/reference/ref_heads.py; contrastive = pytorch-metric-learning's ContrastiveLoss with its
defaults (LpDistance on normalized embeddings, AvgNonZeroReducer per sub-loss, sub-losses summed),
written out here because that package is not installable; proxy_anchor = the Proxy-Anchor loss of
Kim et al. (CVPR 2020) as in the authors' code; multi_similarity = the Multi-Similarity loss of Wang et
al. (CVPR 2019) with the mining of the authors' code (research-ms-loss), self-pairs excluded by index
rather than by similarity < 1 - 1e-5, and anchors without a positive or a negative skipped.
"""
import json

import torch
import torch.nn.functional as F

torch.set_default_dtype(torch.float64)


def softmax_loss(z, logits, proxies, y, cfg):
    return F.cross_entropy(logits, y)


def triplet_loss(z, logits, proxies, y, cfg):
    zn = F.normalize(z, dim=1)
    d = torch.cdist(zn, zn)
    same = y[:, None] == y[None, :]
    pos = (d * same.float()).max(1).values
    neg = (d + 1e3 * same.float()).min(1).values
    return F.relu(pos - neg + cfg["triplet_margin"]).mean()


def avg_non_zero(losses):
    k = int((losses > 0).sum())
    return losses.sum() / k if k > 0 else losses.sum() * 0


def contrastive_loss(z, logits, proxies, y, cfg):
    zn = F.normalize(z, dim=1)
    d = torch.cdist(zn, zn)
    same = y[:, None] == y[None, :]
    eye = torch.eye(len(y), dtype=torch.bool)
    pos = d[same & ~eye]
    neg = d[~same]
    return avg_non_zero(F.relu(pos - cfg["pos_margin"])) + avg_non_zero(F.relu(cfg["neg_margin"] - neg))


def proxy_anchor_loss(z, logits, proxies, y, cfg):
    alpha, mrg = cfg["proxy_alpha"], cfg["proxy_margin"]
    nb_classes = proxies.shape[0]
    cos = F.linear(F.normalize(z, dim=1), F.normalize(proxies, dim=1))
    p_one_hot = F.one_hot(y, nb_classes).double()
    n_one_hot = 1 - p_one_hot
    pos_exp = torch.exp(-alpha * (cos - mrg))
    neg_exp = torch.exp(alpha * (cos + mrg))
    with_pos = torch.nonzero(p_one_hot.sum(dim=0) != 0).squeeze(dim=1)
    p_sim_sum = torch.where(p_one_hot == 1, pos_exp, torch.zeros_like(pos_exp)).sum(dim=0)
    n_sim_sum = torch.where(n_one_hot == 1, neg_exp, torch.zeros_like(neg_exp)).sum(dim=0)
    pos_term = torch.log(1 + p_sim_sum).sum() / len(with_pos)
    neg_term = torch.log(1 + n_sim_sum).sum() / nb_classes
    return pos_term + neg_term


def multi_similarity_loss(z, logits, proxies, y, cfg):
    alpha, beta, base, margin = cfg["ms_alpha"], cfg["ms_beta"], cfg["ms_base"], cfg["ms_margin"]
    zn = F.normalize(z, dim=1)
    sim = zn @ zn.t()
    n = len(y)
    idx = torch.arange(n)
    terms = []
    for i in range(n):
        pos_ = sim[i][(y == y[i]) & (idx != i)]
        neg_ = sim[i][y != y[i]]
        if len(pos_) < 1 or len(neg_) < 1:
            continue
        neg = neg_[neg_ + margin > pos_.min()]
        pos = pos_[pos_ - margin < neg_.max()]
        if len(neg) < 1 or len(pos) < 1:
            continue
        pos_loss = 1.0 / alpha * torch.log(1 + torch.sum(torch.exp(-alpha * (pos - base))))
        neg_loss = 1.0 / beta * torch.log(1 + torch.sum(torch.exp(beta * (neg - base))))
        terms.append(pos_loss + neg_loss)
    if not terms:
        return (z * 0).sum()
    return sum(terms) / n


LOSSES = {"softmax": softmax_loss, "triplet": triplet_loss, "contrastive": contrastive_loss,
          "proxy_anchor": proxy_anchor_loss, "multi_similarity": multi_similarity_loss}


def rows(t):
    return [[float(v) for v in r] for r in t]


def case(desc, n, e, c, labels, seed, cfg, cluster=0.0):
    g = torch.Generator().manual_seed(seed)
    z0 = torch.randn(n, e, generator=g)
    if cluster:  # embeddings near their class's centre: most pairs are easy, and mining drops them
        z0 = 0.3 * z0 + cluster * torch.randn(max(labels) + 1, e, generator=g)[torch.tensor(labels)]
    l0 = torch.randn(n, c, generator=g) * 2
    p0 = torch.randn(c, e, generator=g)
    y = torch.tensor(labels)
    out = {"description": desc, "labels": labels, "config": cfg, "embeddings": rows(z0), "logits": rows(l0),
           "proxies": rows(p0), "expected": {}}
    for name, fn in LOSSES.items():
        z, lg, p = (t.clone().requires_grad_(True) for t in (z0, l0, p0))
        loss = fn(z, lg, p, y, cfg)
        gz, gl, gp = torch.autograd.grad(loss, (z, lg, p), allow_unused=True)
        zero = lambda t, like: torch.zeros_like(like) if t is None else t
        out["expected"][name] = {"loss": float(loss), "grad_embeddings": rows(zero(gz, z0)),
                                 "grad_logits": rows(zero(gl, l0)), "grad_proxies": rows(zero(gp, p0))}
    return out


DEFAULTS = {"triplet_margin": 0.2, "pos_margin": 0.0, "neg_margin": 1.0, "proxy_alpha": 32.0, "proxy_margin": 0.1,
            "ms_alpha": 2.0, "ms_beta": 50.0, "ms_base": 0.5, "ms_margin": 0.1}
SOFT = dict(DEFAULTS, triplet_margin=0.5, pos_margin=0.3, neg_margin=1.2, proxy_alpha=4.0, proxy_margin=0.2,
            ms_alpha=3.0, ms_beta=10.0, ms_base=0.2, ms_margin=0.4)

cases = [
    case("mixed classes with a singleton and an absent class, defaults", 9, 5, 6,
         [0, 0, 1, 1, 1, 2, 2, 4, 2], 1, DEFAULTS),
    case("three classes of three, other margins", 9, 4, 3, [2, 0, 1, 0, 2, 1, 1, 0, 2], 2, SOFT),
    case("one class", 5, 4, 3, [1, 1, 1, 1, 1], 3, SOFT),
    case("all singletons", 4, 3, 5, [0, 3, 1, 4], 4, DEFAULTS),
    case("clustered classes, defaults", 12, 6, 4, [0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3], 5, DEFAULTS, cluster=0.35),
]
print(json.dumps({"generator": "head/testdata/make_loss_golden.py (PyTorch %s, float64)" % torch.__version__,
                  "cases": cases}, indent=1))
