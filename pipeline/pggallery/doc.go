// Package pggallery keeps a gallery index in PostgreSQL with the pgvector extension: one table
// (id, path, label, embedding vector(D)) with an HNSW index on cosine distance, searched with
// pgvector's <=> operator, either through the HNSW index (approximate) or exactly (the index is
// bypassed and every row is scanned, as the flat gallery.Index does).
//
// Writing is one transaction: a failure anywhere, the server going away included, leaves the
// previous gallery of that name as it was.
package pggallery
