package pggallery

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/grouploss/pipeline/pipeline/gallery"
)

// Gallery is an open gallery table.
type Gallery struct {
	c     *pgx.Conn
	table string
	// Dim and Model are what Write recorded.
	Dim   int
	Model gallery.Model
}

// Neighbor is one search result: the row's id (its row in the embeddings it was written from),
// path, label and cosine distance.
type Neighbor struct {
	Row      int
	Path     string
	Label    string
	Distance float64
}

// Open opens the gallery table of the database at url.
func Open(ctx context.Context, url, table string) (*Gallery, error) {
	if err := checkName(table); err != nil {
		return nil, err
	}
	c, err := connect(ctx, url)
	if err != nil {
		return nil, err
	}
	g := &Gallery{c: c, table: table}
	var model []byte
	err = c.QueryRow(ctx, `SELECT dim, model FROM `+catalog+` WHERE name = $1`, table).Scan(&g.Dim, &model)
	if err == nil {
		err = json.Unmarshal(model, &g.Model)
	}
	if err != nil {
		c.Close(context.Background())
		if errors.Is(err, pgx.ErrNoRows) || isUndefinedTable(err) {
			return nil, fmt.Errorf("pggallery: %s has no gallery %q: write one with `pipeline index --to URL --table %s`", Redact(url), table, table)
		}
		return nil, fmt.Errorf("pggallery: gallery %q: %w", table, err)
	}
	return g, nil
}

// Close closes the connection.
func (g *Gallery) Close() error { return g.c.Close(context.Background()) }

// SearchOptions choose how Search scans.
type SearchOptions struct {
	// Exact bypasses the HNSW index: every row is compared, as the flat index does.
	Exact bool
	// EfSearch is HNSW's candidate list size (0: pgvector's default, 40); larger is slower and
	// nearer exact. Recall is bounded by it: at most EfSearch rows come back.
	EfSearch int
}

// Search returns the k nearest rows by cosine distance of each of the nq queries (row-major, nq
// x Dim).
func (g *Gallery) Search(ctx context.Context, queries []float32, nq, k int, o SearchOptions) ([][]Neighbor, error) {
	if len(queries) != nq*g.Dim {
		return nil, fmt.Errorf("pggallery: %d query values, want %d x %d", len(queries), nq, g.Dim)
	}
	tx, err := g.c.Begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("pggallery: %w", err)
	}
	defer tx.Rollback(context.Background())
	// SET LOCAL lasts until the end of this read-only transaction.
	if o.Exact {
		if _, err := tx.Exec(ctx, `SET LOCAL enable_indexscan = off`); err != nil {
			return nil, fmt.Errorf("pggallery: %w", err)
		}
	} else if o.EfSearch > 0 {
		if _, err := tx.Exec(ctx, fmt.Sprintf(`SET LOCAL hnsw.ef_search = %d`, o.EfSearch)); err != nil {
			return nil, fmt.Errorf("pggallery: %w", err)
		}
	}
	q := `SELECT id, path, label, embedding <=> $1::vector FROM ` + pgx.Identifier{g.table}.Sanitize() +
		` ORDER BY embedding <=> $1::vector LIMIT $2`
	out := make([][]Neighbor, nq)
	for i := range nq {
		rows, err := tx.Query(ctx, q, vectorText(queries[i*g.Dim:(i+1)*g.Dim]), k)
		if err != nil {
			return nil, fmt.Errorf("pggallery: query %d: %w", i, err)
		}
		for rows.Next() {
			var n Neighbor
			var id int64
			if err := rows.Scan(&id, &n.Path, &n.Label, &n.Distance); err != nil {
				rows.Close()
				return nil, fmt.Errorf("pggallery: query %d: %w", i, err)
			}
			n.Row = int(id)
			out[i] = append(out[i], n)
		}
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("pggallery: query %d: %w", i, err)
		}
	}
	return out, nil
}
