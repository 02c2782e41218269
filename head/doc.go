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
// Baseline losses train the same head through StepLoss with a LossConfig (LossKind "group", the
// default, "softmax", "triplet", "contrastive", "proxy_anchor", "multi_similarity"; see the LossKind constants for the
// formulas). The metric losses work on L2-normalized embeddings z / sqrt(||z||² + 1e-12) (a zero
// row stays zero) and on distances d = u / sqrt(u + 1e-12), u = ReLU(squared distance from the
// Gram matrix): d is exactly 0 for identical rows and has a finite gradient there. Proxy-Anchor
// uses the classifier's weight rows as the class proxies, so the parameter set (and checkpoints,
// export) is the same for every loss. Values and gradients match PyTorch
// (testdata/make_loss_golden.py).
//
// The head and the loss are built as a gorgonia expression graph and differentiated
// symbolically; gorgonia types appear in this package's API only in Trunk (StepTrunk), which puts
// a computation in front of the head into the same graph (the decoded tail of the backbone), so
// that one gradient pass gives the gradients of the trunk's and the head's parameters. gorgonia
// panics are returned as errors. Graphs are built per trunk, batch size and loss configuration
// and cached; a Head is not safe for concurrent use.
//
// Speed: the input layer (In×out weights against a batch of ~54 rows, most of a step's
// arithmetic) is a custom gorgonia Op (linearop.go). In float32 graphs its products run on
// OpenBLAS through internal/matmul (kernels_f32.go), about a quarter of the CPU time of gonum's
// dot/axpy loops; float64 graphs (the finite-difference tests) and evaluation-time embedding
// (Embed, float64, without a graph) use those loops (kernels.go). Two more custom Ops replace
// chains of gorgonia nodes whose broadcasts and transposes gorgonia materializes element by
// element: the Group Loss's Pearson correlation (pearsonop.go), the Gram matrix x·xᵀ of the
// metric losses (gramop.go) and the row-wise (log-)softmax (softmaxop.go), each with its
// gradient written out.
//
// gorgonia v0.9.18 / tensor v0.9.24 problems worked around here: OuterProd's gradient is wrong
// (the Pearson Op divides by the norms itself); SoftMax/LogSoftMax shift rows by a value from the first
// row instead of the row maximum (softmaxop.go shifts by the row maximum);
// Rectify passes gradient at exactly 0 (ReLU is x ⊙ (x > 0), as PyTorch); the tape machine
// reuses node memory, so outputs are captured with Read nodes; Transpose copies element by element
// (the graph keeps weights pre-transposed instead).
package head
