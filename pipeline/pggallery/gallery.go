package pggallery

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/grouploss/pipeline/pipeline/gallery"
)

// catalog lists the galleries of a database: name, dimension and the model of each.
const catalog = "pipeline_galleries"

var validName = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)

// IsURL reports whether s names a PostgreSQL database (postgres:// or postgresql://) rather than
// an index file.
func IsURL(s string) bool {
	return strings.HasPrefix(s, "postgres://") || strings.HasPrefix(s, "postgresql://")
}

// connect opens one connection (the pglite server takes one at a time by default). Statements
// are not prepared: pglite serves every client from one backend session, where the prepared
// statements of a closed connection live on and collide with the next one's names.
func connect(ctx context.Context, url string) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("pggallery: %s: %w", Redact(url), err)
	}
	cfg.DefaultQueryExecMode = pgx.QueryExecModeExec
	c, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("pggallery: %s: %w", Redact(url), err)
	}
	return c, nil
}

// Redact hides a password in a connection URL for error messages.
func Redact(url string) string {
	if cfg, err := pgx.ParseConfig(url); err == nil {
		return fmt.Sprintf("postgres://%s@%s:%d/%s", cfg.User, cfg.Host, cfg.Port, cfg.Database)
	}
	return "the database URL"
}

func checkName(table string) error {
	if !validName.MatchString(table) || table == catalog {
		return fmt.Errorf("pggallery: table name %q: want lowercase letters, digits and _ (not starting with a digit), not %q", table, catalog)
	}
	return nil
}

// vectorText is the pgvector text form of v, '[v0,v1,...]', with the shortest decimal that
// reads back as the same float32.
func vectorText(v []float32) string {
	b := make([]byte, 0, 12*len(v)+2)
	b = append(b, '[')
	for i, x := range v {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendFloat(b, float64(x), 'g', -1, 32)
	}
	return string(append(b, ']'))
}

// Options configure Write.
type Options struct {
	// NoHNSW skips the HNSW index: every search is then an exact scan.
	NoHNSW bool
	// M and EfConstruction are the HNSW build parameters (0: pgvector's defaults, 16 and 64).
	M, EfConstruction int
	// BuildMemory is maintenance_work_mem for the index build (e.g. "1GB"; "": the server's
	// setting). pgvector builds much faster while the graph fits in it (64MB by default: about
	// 100k 128-d vectors do not).
	BuildMemory string
}

var validMemory = regexp.MustCompile(`^[0-9]+ ?(kB|MB|GB)$`)

// Write stores idx as the gallery table (replacing one of that name) with its HNSW index on
// cosine distance, in one transaction: on any error nothing of it is visible and a previous
// gallery of that name is untouched. It returns the gallery's size on the server (table, TOAST
// and indexes).
func Write(ctx context.Context, url, table string, idx *gallery.Index, o Options) (bytes int64, err error) {
	if err := checkName(table); err != nil {
		return 0, err
	}
	c, err := connect(ctx, url)
	if err != nil {
		return 0, err
	}
	defer c.Close(context.Background())
	tx, err := c.Begin(ctx)
	if err != nil {
		return 0, fmt.Errorf("pggallery: %w", err)
	}
	defer tx.Rollback(context.Background())
	if err := write(ctx, tx, table, idx, o); err != nil {
		return 0, fmt.Errorf("pggallery: gallery %q: %w", table, err)
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, fmt.Errorf("pggallery: gallery %q: commit: %w", table, err)
	}
	t := pgx.Identifier{table}.Sanitize()
	if err := c.QueryRow(ctx, `SELECT pg_total_relation_size($1::regclass)`, t).Scan(&bytes); err != nil {
		return 0, fmt.Errorf("pggallery: gallery %q: written, but its size: %w", table, err)
	}
	return bytes, nil
}

func write(ctx context.Context, tx pgx.Tx, table string, idx *gallery.Index, o Options) error {
	t := pgx.Identifier{table}.Sanitize()
	model, err := json.Marshal(idx.Model)
	if err != nil {
		return err
	}
	stmts := []string{
		`CREATE EXTENSION IF NOT EXISTS vector`,
		`CREATE TABLE IF NOT EXISTS ` + catalog + ` (name text PRIMARY KEY, dim int NOT NULL, model jsonb NOT NULL)`,
		`DROP TABLE IF EXISTS ` + t,
		fmt.Sprintf(`CREATE TABLE %s (id bigint PRIMARY KEY, path text NOT NULL, label text NOT NULL, embedding vector(%d) NOT NULL)`, t, idx.Dim),
	}
	for _, s := range stmts {
		if _, err := tx.Exec(ctx, s); err != nil {
			return fmt.Errorf("%s: %w", strings.Fields(s)[0]+" "+strings.Fields(s)[1], err)
		}
	}
	// Rows go in chunks of array parameters (one round trip per chunk).
	const chunk = 2000
	ins := `INSERT INTO ` + t + ` (id, path, label, embedding) SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[]::vector[])`
	for lo := 0; lo < idx.Len(); lo += chunk {
		hi := min(lo+chunk, idx.Len())
		ids, vecs := make([]int64, hi-lo), make([]string, hi-lo)
		for i := lo; i < hi; i++ {
			ids[i-lo], vecs[i-lo] = int64(i), vectorText(idx.Embeddings[i*idx.Dim:(i+1)*idx.Dim])
		}
		if _, err := tx.Exec(ctx, ins, ids, idx.Paths[lo:hi], idx.Labels[lo:hi], vecs); err != nil {
			return fmt.Errorf("insert rows %d-%d: %w", lo, hi-1, err)
		}
	}
	if !o.NoHNSW {
		if o.BuildMemory != "" {
			if !validMemory.MatchString(o.BuildMemory) {
				return fmt.Errorf("build memory %q: want a size such as 512MB or 2GB", o.BuildMemory)
			}
			if _, err := tx.Exec(ctx, `SET LOCAL maintenance_work_mem = '`+o.BuildMemory+`'`); err != nil {
				return fmt.Errorf("build memory %q: %w", o.BuildMemory, err)
			}
		}
		var with []string
		if o.M > 0 {
			with = append(with, fmt.Sprintf("m = %d", o.M))
		}
		if o.EfConstruction > 0 {
			with = append(with, fmt.Sprintf("ef_construction = %d", o.EfConstruction))
		}
		s := `CREATE INDEX ON ` + t + ` USING hnsw (embedding vector_cosine_ops)`
		if len(with) > 0 {
			s += " WITH (" + strings.Join(with, ", ") + ")"
		}
		if _, err := tx.Exec(ctx, s); err != nil {
			return fmt.Errorf("hnsw index: %w", err)
		}
	}
	_, err = tx.Exec(ctx, `INSERT INTO `+catalog+` (name, dim, model) VALUES ($1, $2, $3)
		ON CONFLICT (name) DO UPDATE SET dim = EXCLUDED.dim, model = EXCLUDED.model`, table, idx.Dim, string(model))
	return err
}

// isUndefinedTable reports PostgreSQL's undefined_table error (42P01).
func isUndefinedTable(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "42P01"
}
