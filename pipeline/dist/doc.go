// Package dist spreads the extraction of embeddings over several processes or machines, in two
// ways that need no scheduler of our own:
//
//   - a work queue on NATS JetStream (Queue): a coordinator submits a Job (batches of image
//     references and the model's SHA-256) to a work-queue stream, workers pull batches, embed
//     them and publish the results to a results stream, acking a batch only after its result is
//     stored; the coordinator collects the results by image. Delivery is at least once: a batch
//     whose worker dies is redelivered after the ack wait, and duplicate results are dropped.
//   - static shards (Shard): a deterministic partition of the sorted image list, for schedulers
//     that hand out indices (a Kubernetes Indexed Job).
//
// Images are referenced by path, so every worker must see the same files (a shared volume).
package dist
