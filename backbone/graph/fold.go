package graph

import "math"

// foldBatchNorms folds each BatchNormalization whose input comes only from a Conv with
// constant (or parameter) weight and bias used by no other node into that Conv:
// W' = W·s, B' = (B − mean)·s + beta with s = gamma/sqrt(var + ε) per output channel.
func foldBatchNorms(p *plan) {
	uses := make([]int, len(p.vals))
	for _, n := range p.nodes {
		for _, in := range n.in {
			if in >= 0 {
				uses[in]++
			}
		}
	}
	uses[p.out]++ // To is used by the caller
	producer := map[int]*pnode{}
	for _, n := range p.nodes {
		producer[n.out] = n
	}
	fixedVal := func(id int) bool {
		k := p.vals[id].kind
		return k == valConst || k == valParam
	}
	dataOf := func(id int) []float64 {
		if v := p.vals[id]; v.kind == valParam {
			return v.param.Value
		}
		return p.vals[id].data
	}
	var kept []*pnode
	removed := map[*pnode]bool{}
	for _, bn := range p.nodes {
		if bn.op != "BatchNormalization" {
			continue
		}
		conv := producer[bn.in[0]]
		if conv == nil || conv.op != "Conv" || uses[conv.out] != 1 {
			continue
		}
		w := conv.in[1]
		if !fixedVal(w) || uses[w] != 1 || !fixedVal(bn.in[1]) || !fixedVal(bn.in[2]) {
			continue
		}
		hasB := len(conv.in) > 2 && conv.in[2] >= 0
		if hasB && (!fixedVal(conv.in[2]) || uses[conv.in[2]] != 1) {
			continue
		}
		a := bn.attrs.(*bnAttrs)
		ws := p.vals[w].shape
		mOut := ws[0]
		gamma, beta := dataOf(bn.in[1]), dataOf(bn.in[2])
		if len(gamma) != mOut || len(beta) != mOut || len(a.mean) != mOut || len(a.variance) != mOut {
			continue // shapes disagree: leave it to the run-time checks
		}
		per := numel(ws[1:])
		wd := dataOf(w)
		var bd []float64
		if hasB {
			bd = dataOf(conv.in[2])
		} else {
			bd = make([]float64, mOut)
		}
		nw := make([]float64, len(wd))
		nb := make([]float64, mOut)
		for o := 0; o < mOut; o++ {
			s := gamma[o] / math.Sqrt(a.variance[o]+a.eps)
			for j := 0; j < per; j++ {
				nw[o*per+j] = wd[o*per+j] * s
			}
			nb[o] = (bd[o]-a.mean[o])*s + beta[o]
		}
		setData(p, w, nw)
		// BN's own parameters are gone: drop them if no other node reads them.
		for _, id := range bn.in[1:3] {
			uses[id]--
			if uses[id] == 0 && p.vals[id].kind == valParam {
				dropParam(p, p.vals[id].param)
			}
		}
		if hasB {
			setData(p, conv.in[2], nb)
		} else {
			// The folded bias is named after BN's bias tensor (suffixed when that stays in use).
			name := p.vals[bn.in[2]].name
			if uses[bn.in[2]] > 0 {
				name += "_folded"
			}
			bv := &pvalue{name: name, kind: p.vals[w].kind, shape: []int{mOut}, data: nb}
			if bv.kind == valParam {
				bv.param = &Param{Name: name, Shape: []int{mOut}, Value: nb, Grad: make([]float64, mOut)}
				bv.data = nil
				p.params = append(p.params, bv.param)
			}
			p.vals = append(p.vals, bv)
			conv.in = append(conv.in[:2], len(p.vals)-1)
		}
		conv.out = bn.out
		removed[bn] = true
		p.folded = append(p.folded, conv.name+" <- "+bn.name)
	}
	for _, n := range p.nodes {
		if !removed[n] {
			kept = append(kept, n)
		}
	}
	p.nodes = kept
}

func setData(p *plan, id int, d []float64) {
	v := p.vals[id]
	if v.kind == valParam {
		v.param.Value = d
		return
	}
	v.data = d
}

func dropParam(p *plan, q *Param) {
	for i, x := range p.params {
		if x == q {
			p.params = append(p.params[:i], p.params[i+1:]...)
			return
		}
	}
}
