package head

import (
	"fmt"
	"math"

	gg "gorgonia.org/gorgonia"
)

// LossKind names the loss a head is trained with.
type LossKind string

const (
	// LossGroup is the Group Loss (GroupLoss): replicator NLL + cross-entropy of the logits.
	LossGroup LossKind = "group"
	// LossSoftmax is the mean cross-entropy of the classifier logits alone.
	LossSoftmax LossKind = "softmax"
	// LossTriplet is the batch-hard triplet loss on L2-normalized embeddings (Hermans et al. 2017,
	// as the reference ref_heads.py): with Euclidean distances d,
	// mean_i ReLU(max_{j≠i, y_j=y_i} d_ij − min_{y_j≠y_i} d_ij + TripletMargin). The hardest
	// positive of a row without positives is 0; the hardest negative of a row without negatives is
	// 1000 (so the row contributes 0), as in the reference. When several distances tie for the
	// maximum or minimum (identical embeddings), each tied entry gets the full gradient (gorgonia's
	// Max), where PyTorch picks one.
	LossTriplet LossKind = "triplet"
	// LossContrastive is the contrastive loss on the Euclidean distances d of L2-normalized
	// embeddings, as pytorch-metric-learning's ContrastiveLoss with its default reducer:
	// mean over non-zero terms of ReLU(d_ij − PosMargin) over positive pairs (i ≠ j, same label)
	// plus mean over non-zero terms of ReLU(NegMargin − d_ij) over negative pairs; an empty mean is 0.
	LossContrastive LossKind = "contrastive"
	// LossProxyAnchor is the Proxy-Anchor loss (Kim et al., CVPR 2020) with the classifier's weight
	// rows as the class proxies (cls.weight [Classes, Emb]; cls.bias is unused and gets a zero
	// gradient): with s = cosine similarity (n, Classes), α = ProxyAlpha, δ = ProxyMargin,
	// loss = 1/|P⁺| Σ_{p∈P⁺} log(1 + Σ_{i: y_i=p} e^{−α(s_ip−δ)}) + 1/Classes Σ_p log(1 + Σ_{i: y_i≠p} e^{α(s_ip+δ)}),
	// P⁺ being the classes present in the batch. The log-sum-exps are shifted, so any α is safe.
	LossProxyAnchor LossKind = "proxy_anchor"
	// LossMultiSimilarity is the Multi-Similarity loss (Wang et al., CVPR 2019) on the cosine
	// similarities S of L2-normalized embeddings, with the pair mining of the authors' code: for
	// anchor i, a negative j is kept if S_ij + ε > min of i's positive similarities, a positive j
	// (j ≠ i) if S_ij − ε < max of i's negative similarities; with α = MSAlpha, β = MSBeta,
	// λ = MSBase, ε = MSMargin,
	// loss = 1/n Σ_i [1/α log(1 + Σ_{kept pos} e^{−α(S_ij−λ)}) + 1/β log(1 + Σ_{kept neg} e^{β(S_ij−λ)})],
	// an anchor without a kept positive or a kept negative contributing 0 (the mining selects; no
	// gradient flows through it).
	LossMultiSimilarity LossKind = "multi_similarity"
)

// LossKinds lists the supported losses.
var LossKinds = []LossKind{LossGroup, LossSoftmax, LossTriplet, LossContrastive, LossProxyAnchor, LossMultiSimilarity}

// LossConfig selects and configures the training loss. Only the fields of the selected Kind are
// used; DefaultLossConfig fills them all. An empty Kind means LossGroup.
type LossConfig struct {
	Kind LossKind `yaml:"kind" json:"kind"`
	// Group configures LossGroup. Its AnchorsPerClass is also used by StepLoss to pick anchors
	// when none are given (other losses ignore anchors).
	Group GroupLoss `yaml:"group" json:"group"`
	// TripletMargin is the hinge margin of LossTriplet on distances (>= 0; 0.2 by default).
	TripletMargin float64 `yaml:"triplet_margin" json:"triplet_margin"`
	// PosMargin and NegMargin are LossContrastive's margins on distances (0 and 1 by default;
	// 0 <= PosMargin, 0 < NegMargin).
	PosMargin float64 `yaml:"pos_margin" json:"pos_margin"`
	NegMargin float64 `yaml:"neg_margin" json:"neg_margin"`
	// ProxyAlpha (> 0; 32 by default) and ProxyMargin (δ, >= 0; 0.1 by default) configure
	// LossProxyAnchor.
	ProxyAlpha  float64 `yaml:"proxy_alpha" json:"proxy_alpha"`
	ProxyMargin float64 `yaml:"proxy_margin" json:"proxy_margin"`
	// MSAlpha (positive scale α > 0; 2), MSBeta (negative scale β > 0; 50), MSBase (similarity
	// offset λ; 0.5) and MSMargin (mining margin ε >= 0; 0.1) configure LossMultiSimilarity.
	MSAlpha  float64 `yaml:"ms_alpha" json:"ms_alpha"`
	MSBeta   float64 `yaml:"ms_beta" json:"ms_beta"`
	MSBase   float64 `yaml:"ms_base" json:"ms_base"`
	MSMargin float64 `yaml:"ms_margin" json:"ms_margin"`
}

// DefaultLossConfig returns the loss kind with every setting at its published default: the Group
// Loss of DefaultGroupLoss, triplet margin 0.2 (ref_heads.py), contrastive margins 0 and 1
// (pytorch-metric-learning), Proxy-Anchor α 32 and δ 0.1 (the paper), Multi-Similarity α 2, β 50,
// λ 0.5 (pytorch-metric-learning's MultiSimilarityLoss) and mining margin ε 0.1 (the authors' code
// and pytorch-metric-learning's MultiSimilarityMiner).
func DefaultLossConfig(kind LossKind) LossConfig {
	return LossConfig{Kind: kind, Group: DefaultGroupLoss(), TripletMargin: 0.2, PosMargin: 0, NegMargin: 1,
		ProxyAlpha: 32, ProxyMargin: 0.1, MSAlpha: 2, MSBeta: 50, MSBase: 0.5, MSMargin: 0.1}
}

func (lc LossConfig) kind() LossKind {
	if lc.Kind == "" {
		return LossGroup
	}
	return lc.Kind
}

// Validate reports an unknown kind or a setting of the selected kind the loss cannot be computed with.
func (lc LossConfig) Validate() error {
	bad := func(name string, v float64, want string) error {
		return fmt.Errorf("head: %s loss %s %g must be %s", lc.kind(), name, v, want)
	}
	fin := func(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }
	switch lc.kind() {
	case LossGroup:
		return lc.Group.Validate()
	case LossSoftmax:
	case LossTriplet:
		if !(lc.TripletMargin >= 0) || !fin(lc.TripletMargin) {
			return bad("triplet_margin", lc.TripletMargin, ">= 0 and finite")
		}
	case LossContrastive:
		if !(lc.PosMargin >= 0) || !fin(lc.PosMargin) {
			return bad("pos_margin", lc.PosMargin, ">= 0 and finite")
		}
		if !(lc.NegMargin > 0) || !fin(lc.NegMargin) {
			return bad("neg_margin", lc.NegMargin, "positive and finite")
		}
	case LossProxyAnchor:
		if !(lc.ProxyAlpha > 0) || !fin(lc.ProxyAlpha) {
			return bad("proxy_alpha", lc.ProxyAlpha, "positive and finite")
		}
		if !(lc.ProxyMargin >= 0) || !fin(lc.ProxyMargin) {
			return bad("proxy_margin", lc.ProxyMargin, ">= 0 and finite")
		}
	case LossMultiSimilarity:
		for _, f := range []struct {
			name string
			v    float64
		}{{"ms_alpha", lc.MSAlpha}, {"ms_beta", lc.MSBeta}} {
			if !(f.v > 0) || !fin(f.v) {
				return bad(f.name, f.v, "positive and finite")
			}
		}
		if !fin(lc.MSBase) {
			return bad("ms_base", lc.MSBase, "finite")
		}
		if !(lc.MSMargin >= 0) || !fin(lc.MSMargin) {
			return bad("ms_margin", lc.MSMargin, ">= 0 and finite")
		}
	default:
		return fmt.Errorf("head: unknown loss %q (want one of %v)", lc.Kind, LossKinds)
	}
	return nil
}

// key returns the configuration with the fields the selected kind does not use zeroed: the part
// that determines the graph. Group.AnchorsPerClass is a batch input, not part of the graph.
func (lc LossConfig) key() LossConfig {
	k := LossConfig{Kind: lc.kind()}
	switch k.Kind {
	case LossGroup:
		k.Group = lc.Group
		k.Group.AnchorsPerClass = 0
	case LossTriplet:
		k.TripletMargin = lc.TripletMargin
	case LossContrastive:
		k.PosMargin, k.NegMargin = lc.PosMargin, lc.NegMargin
	case LossProxyAnchor:
		k.ProxyAlpha, k.ProxyMargin = lc.ProxyAlpha, lc.ProxyMargin
	case LossMultiSimilarity:
		k.MSAlpha, k.MSBeta, k.MSBase, k.MSMargin = lc.MSAlpha, lc.MSBeta, lc.MSBase, lc.MSMargin
	}
	return k
}

// usesLogits reports whether the loss needs the classifier's logits (cls.weight and cls.bias).
func (lc LossConfig) usesLogits() bool {
	k := lc.kind()
	return k == LossGroup || k == LossSoftmax
}

// usesProxies reports whether the loss uses cls.weight as class proxies (without cls.bias).
func (lc LossConfig) usesProxies() bool { return lc.kind() == LossProxyAnchor }

// l2Eps guards the L2 normalization of a zero row (z / sqrt(||z||² + l2Eps)) and the square root of
// a zero squared distance (see dist). For ||z||² ≫ l2Eps it changes nothing measurable.
const l2Eps = 1e-12

// msNoPair is what the Multi-Similarity mining adds to (or subtracts from) the similarities of
// pairs that are not candidates before taking the min of the positives or the max of the
// negatives: cosines lie in [-1, 1], so an anchor without positives (negatives) keeps no negative
// (positive) and contributes nothing.
const msNoPair = 10

// tripletNoNeg is what the batch-hard triplet loss adds to same-class distances before taking the
// hardest negative, as the reference (1e3): a row without negatives contributes nothing.
const tripletNoNeg = 1e3

// buildLossConfig adds the loss lc to z's graph. logits (n, c) must be non-nil when lc.usesLogits,
// proxiesT (e, c), the transposed proxies, when lc.usesProxies.
func buildLossConfig(z, logits, proxiesT *gg.Node, bi *batchInputs, lc LossConfig, dt DType) (*lossNodes, error) {
	if lc.kind() == LossGroup {
		return buildLoss(z, logits, bi, lc.Group, dt)
	}
	b := &builder{dt: dt}
	n := z.Shape()[0]
	var ln lossNodes
	switch lc.kind() {
	case LossSoftmax:
		lsm := b.logSoftmax(logits)
		ln.ce = b.do(gg.HadamardProd(b.do(gg.Sum(b.do(gg.HadamardProd(lsm, bi.y)))), b.scalar(-1/float64(n))))
		ln.loss = ln.ce
	case LossTriplet:
		d := b.dist(b.l2Rows(z))
		// Hardest positive: max over same-class j ≠ i (masked entries are 0 <= any distance).
		pos := b.do(gg.Max(b.do(gg.HadamardProd(d, bi.pos)), 1))
		// Hardest negative: min over j of d + 1e3·[y_j = y_i], as -max(-(...)).
		same := b.do(gg.Sub(b.scalar(1), bi.neg))
		shifted := b.do(gg.Add(d, b.do(gg.HadamardProd(same, b.scalar(tripletNoNeg)))))
		neg := b.do(gg.Neg(b.do(gg.Max(b.do(gg.Neg(shifted)), 1))))
		hinge := b.relu(b.do(gg.Add(b.do(gg.Sub(pos, neg)), b.scalar(lc.TripletMargin))))
		ln.loss = b.do(gg.HadamardProd(b.do(gg.Sum(hinge)), b.scalar(1/float64(n))))
	case LossContrastive:
		d := b.dist(b.l2Rows(z))
		posL := b.do(gg.HadamardProd(b.relu(b.do(gg.Sub(d, b.scalar(lc.PosMargin)))), bi.pos))
		negL := b.do(gg.HadamardProd(b.relu(b.do(gg.Sub(b.scalar(lc.NegMargin), d))), bi.neg))
		ln.loss = b.do(gg.Add(b.meanNonZero(posL), b.meanNonZero(negL)))
	case LossProxyAnchor:
		zn := b.l2Rows(z)
		sqc := b.do(gg.Sum(b.do(gg.Square(proxiesT)), 0))
		pn := b.do(gg.BroadcastHadamardDiv(proxiesT, b.do(gg.Sqrt(b.do(gg.Add(sqc, b.scalar(l2Eps))))), nil, []byte{0}))
		cos := b.do(gg.Mul(zn, pn)) // (n, c)
		alpha, delta := lc.ProxyAlpha, lc.ProxyMargin
		notY := b.do(gg.Sub(b.scalar(1), bi.y))
		posA := b.do(gg.HadamardProd(b.do(gg.Sub(b.scalar(delta), cos)), b.scalar(alpha)))
		negA := b.do(gg.HadamardProd(b.do(gg.Add(cos, b.scalar(delta))), b.scalar(alpha)))
		posT := b.log1pSumExpCols(posA, bi.y)
		negT := b.log1pSumExpCols(negA, notY)
		// Classes absent from the batch have a positive term of exactly log(1) = 0.
		present := b.do(gg.Sum(b.do(gg.Gt(b.do(gg.Sum(bi.y, 0)), b.scalar(0.5), true))))
		c := float64(bi.c)
		ln.loss = b.do(gg.Add(b.do(gg.HadamardDiv(b.do(gg.Sum(posT)), present)),
			b.do(gg.HadamardProd(b.do(gg.Sum(negT)), b.scalar(1/c)))))
	case LossMultiSimilarity:
		ln.loss = b.multiSimilarity(z, bi, lc)
	default:
		return nil, fmt.Errorf("head: unknown loss %q", lc.Kind)
	}
	if b.err != nil {
		return nil, fmt.Errorf("head: building the %s loss graph: %w", lc.kind(), b.err)
	}
	return &ln, nil
}

// multiSimilarity builds LossMultiSimilarity of the embeddings z (n, e).
func (b *builder) multiSimilarity(z *gg.Node, bi *batchInputs, lc LossConfig) *gg.Node {
	if b.err != nil {
		return nil
	}
	zn := b.l2Rows(z)
	s := b.do(gramMatrix(zn)) // (n, n) cosine similarities
	row := []byte{1}          // broadcast an (n) vector along the columns: entry i to row i
	one := b.scalar(1)
	// Mining: the hardest positive (lowest similarity) and negative (highest) of each anchor.
	notPos := b.do(gg.Sub(one, bi.pos))
	minPos := b.do(gg.Neg(b.do(gg.Max(b.do(gg.Neg(b.do(gg.Add(s, b.do(gg.HadamardProd(notPos, b.scalar(msNoPair))))))), 1))))
	notNeg := b.do(gg.Sub(one, bi.neg))
	maxNeg := b.do(gg.Max(b.do(gg.Sub(s, b.do(gg.HadamardProd(notNeg, b.scalar(msNoPair))))), 1))
	eps := b.scalar(lc.MSMargin)
	negKept := b.do(gg.HadamardProd(bi.neg, b.do(gg.Gt(b.do(gg.BroadcastSub(b.do(gg.Add(s, eps)), minPos, nil, row)), b.scalar(0), true))))
	posKept := b.do(gg.HadamardProd(bi.pos, b.do(gg.Lt(b.do(gg.BroadcastSub(b.do(gg.Sub(s, eps)), maxNeg, nil, row)), b.scalar(0), true))))
	hasPos := b.do(gg.Gt(b.do(gg.Sum(posKept, 1)), b.scalar(0.5), true))
	hasNeg := b.do(gg.Gt(b.do(gg.Sum(negKept, 1)), b.scalar(0.5), true))
	valid := b.do(gg.HadamardProd(hasPos, hasNeg)) // (n)
	// Weighting: log(1 + Σ_j mask_ij e^{a_ij}) per anchor i, as column sums of the transposes.
	alpha, beta, base := lc.MSAlpha, lc.MSBeta, lc.MSBase
	shifted := b.do(gg.Sub(s, b.scalar(base)))
	posA := b.do(gg.HadamardProd(shifted, b.scalar(-alpha)))
	negA := b.do(gg.HadamardProd(shifted, b.scalar(beta)))
	posT := b.log1pSumExpCols(b.do(gg.Transpose(posA)), b.do(gg.Transpose(posKept)))
	negT := b.log1pSumExpCols(b.do(gg.Transpose(negA)), b.do(gg.Transpose(negKept)))
	per := b.do(gg.Add(b.do(gg.HadamardProd(posT, b.scalar(1/alpha))), b.do(gg.HadamardProd(negT, b.scalar(1/beta)))))
	n := float64(bi.n)
	return b.do(gg.HadamardProd(b.do(gg.Sum(b.do(gg.HadamardProd(per, valid)))), b.scalar(1/n)))
}

// l2Rows returns the rows of z (n, e) divided by sqrt(||row||² + l2Eps): a zero row stays zero
// with a zero gradient.
func (b *builder) l2Rows(z *gg.Node) *gg.Node {
	sq := b.do(gg.Sum(b.do(gg.Square(z)), 1))
	return b.do(gg.BroadcastHadamardDiv(z, b.do(gg.Sqrt(b.do(gg.Add(sq, b.scalar(l2Eps))))), nil, []byte{1}))
}

// dist returns the (n, n) Euclidean distances between the rows of zn (n, e) from the Gram matrix:
// u = ReLU(|a|² + |b|² − 2a·b) (clamping rounding below 0), d = u / sqrt(u + l2Eps). d is 0 for
// u = 0 and differs from sqrt(u) by a relative l2Eps/(2u); its gradient stays finite at u = 0,
// where sqrt's is infinite.
func (b *builder) dist(zn *gg.Node) *gg.Node {
	if b.err != nil {
		return nil
	}
	sq := b.do(gg.Sum(b.do(gg.Square(zn)), 1))
	gram := b.do(gg.Mul(zn, b.do(gg.Transpose(zn))))
	u := b.do(gg.HadamardProd(gram, b.scalar(-2)))
	u = b.do(gg.BroadcastAdd(u, sq, nil, []byte{1}))
	u = b.do(gg.BroadcastAdd(u, sq, nil, []byte{0}))
	u = b.relu(u)
	return b.do(gg.HadamardDiv(u, b.do(gg.Sqrt(b.do(gg.Add(u, b.scalar(l2Eps)))))))
}

// meanNonZero returns sum(l) / max(1, count(l > 0)) of a non-negative matrix (the count is a
// constant for the gradient, as in pytorch-metric-learning's AvgNonZeroReducer).
func (b *builder) meanNonZero(l *gg.Node) *gg.Node {
	if b.err != nil {
		return nil
	}
	cnt := b.do(gg.Sum(b.do(gg.Gt(l, b.scalar(0), true))))
	empty := b.do(gg.Lt(cnt, b.scalar(0.5), true))
	return b.do(gg.HadamardDiv(b.do(gg.Sum(l)), b.do(gg.Add(cnt, empty))))
}

// log1pSumExpCols returns, for each column j of a (n, k), log(1 + Σ_i mask_ij·exp(a_ij)) (k),
// computed as m + log(e^{−m} + Σ_i mask_ij·e^{a_ij·mask_ij − m}) with m = max(0, max_i a_ij·mask_ij),
// so no exponent is positive. The result does not depend on m, so neither does its gradient.
func (b *builder) log1pSumExpCols(a, mask *gg.Node) *gg.Node {
	if b.err != nil {
		return nil
	}
	col := []byte{0} // broadcast a (k) vector along the rows of an (n, k) matrix
	am := b.do(gg.HadamardProd(a, mask))
	m := b.relu(b.do(gg.Max(am, 0)))
	ex := b.do(gg.HadamardProd(b.do(gg.Exp(b.do(gg.BroadcastSub(am, m, nil, col)))), mask))
	s := b.do(gg.Add(b.do(gg.Sum(ex, 0)), b.do(gg.Exp(b.do(gg.Neg(m))))))
	return b.do(gg.Add(b.do(gg.Log(s)), m))
}
