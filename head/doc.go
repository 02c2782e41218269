// Package head implements the trainable embedding + classifier head on frozen backbone features
// and the Group Loss (Elezi et al., ECCV 2020) it is trained with.
//
// The head is a chain of linear layers, z = x Wᵀ + b with W stored [out, in] row-major (the layout
// of PyTorch's nn.Linear), ReLU between optional hidden layers, an embedding layer producing the
// (batch, Emb) embeddings z, and a classifier producing (batch, Classes) logits = z Wcᵀ + bc.
//
// The Group Loss of a batch, with labels y, anchor flags and embeddings z:
//
//	x = z - mean_row(z); n_i = sqrt(||x_i||² + ε)
//	W = ReLU((x xᵀ + ε I) / outer(n, n))        // Pearson correlation, diagonal 1
//	P0 = softmax(logits / T); anchor rows of P0 replaced by one-hot labels
//	repeat Iterations times: P = P ⊙ (W P); P = P / rowsum(P)
//	loss = Scaling · mean_i(-log(P[i, y_i] + 1e-12)) + mean_i CE(logits_i, y_i)
//
// ε = 1e-12 (normEps) is the only departure from the reference: it makes a zero-variance row (all
// embedding components equal, n = 0) give W row = e_i and a finite loss with a zero gradient for
// that row, instead of NaN. For rows with ||x||² ≫ ε it changes W by a relative ε/||x||² (below
// 1e-12 on the golden cases). ReLU has gradient 0 at exactly 0, as in PyTorch.
//
// The loss is built as a gorgonia expression graph and differentiated symbolically; gorgonia types
// never appear in this package's API. Graphs are built per batch size and cached; a Head is not
// safe for concurrent use. Evaluation-time embedding (Embed) runs in plain Go with gonum BLAS.
package head
