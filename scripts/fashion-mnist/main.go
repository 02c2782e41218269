// Command fashion-mnist writes Debian's Fashion-MNIST as an image folder for `pipeline run --data`:
//
//	go run ./scripts/fashion-mnist -out /tmp/fmnist -per 200            # labels 0-9, 200 images each
//	./bin/pipeline run --data /tmp/fmnist --out runs/fmnist            # trains on 0-4, evaluates on 5-9
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/grouploss/pipeline/internal/fashionmnist"
)

func main() {
	out := flag.String("out", "", "image folder to write (root/<class>/<image>.png)")
	per := flag.Int("per", 200, "images per class")
	classes := flag.Int("classes", 10, "the first N labels")
	dir := flag.String("dir", fashionmnist.Dir, "folder of the dataset's IDX files")
	flag.Parse()
	if *out == "" {
		fmt.Fprintln(os.Stderr, "fashion-mnist: -out is required")
		os.Exit(2)
	}
	labels := make([]int, *classes)
	for i := range labels {
		labels[i] = i
	}
	n, err := fashionmnist.WriteFolder(*dir, *out, labels, *per)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Printf("%d images in %s\n", n, *out)
}
