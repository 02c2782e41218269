package main

import (
	"flag"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	"sigs.k8s.io/yaml"
)

// readManifest decodes deploy/NAME strictly (an unknown or misspelt field is an error) into v.
func readManifest(t *testing.T, name string, v any) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "..", "deploy", name))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.UnmarshalStrict(raw, v); err != nil {
		t.Fatalf("deploy/%s: %v", name, err)
	}
}

// parseArgs parses a container's args with the command's own flag set, as the pod would.
func parseArgs(t *testing.T, name string, args []string, addFlags func(*flag.FlagSet)) {
	t.Helper()
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	addFlags(fs)
	if help, err := parseFlags(fs, args, ""); help || err != nil {
		t.Fatalf("%s args %v: %v", name, args, err)
	}
}

// TestDeployIndexedJob: the Indexed Job is a valid batch/v1 Job whose pod i runs `pipeline embed
// --shard i/N` with N its completions, with flags the embed command accepts.
func TestDeployIndexedJob(t *testing.T) {
	var job batchv1.Job
	readManifest(t, "embed-indexed-job.yaml", &job)
	if job.Kind != "Job" || job.APIVersion != "batch/v1" {
		t.Fatalf("kind %s/%s, want batch/v1 Job", job.APIVersion, job.Kind)
	}
	s := job.Spec
	if s.CompletionMode == nil || *s.CompletionMode != batchv1.IndexedCompletion || s.Completions == nil {
		t.Fatalf("completionMode %v, completions %v: want Indexed with a count", s.CompletionMode, s.Completions)
	}
	c := s.Template.Spec.Containers[0]
	if len(c.Command) != 1 || c.Command[0] != "pipeline" || c.Args[0] != "embed" {
		t.Fatalf("command %v %v, want pipeline embed", c.Command, c.Args)
	}
	n := int(*s.Completions)
	want := "--shard=$(JOB_COMPLETION_INDEX)/" + strconv.Itoa(n)
	found := false
	for _, a := range c.Args {
		found = found || a == want
	}
	if !found {
		t.Errorf("args %v: want %q (the shard count must equal completions %d)", c.Args, want, n)
	}
	declared := false
	for _, e := range c.Env {
		declared = declared || (e.Name == "JOB_COMPLETION_INDEX" && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil &&
			strings.Contains(e.ValueFrom.FieldRef.FieldPath, "job-completion-index"))
	}
	if !declared {
		t.Errorf("env %v: want JOB_COMPLETION_INDEX from the job-completion-index annotation", c.Env)
	}
	// Pod 2's arguments after the kubelet expands $(JOB_COMPLETION_INDEX).
	args := make([]string, len(c.Args)-1)
	for i, a := range c.Args[1:] {
		args[i] = strings.ReplaceAll(a, "$(JOB_COMPLETION_INDEX)", "2")
	}
	var o embedOptions
	parseArgs(t, "embed", args, o.addFlags)
	if o.dist.shard != "2/"+strconv.Itoa(n) || o.out != "/out/part-2.npy" || o.model == "" || o.data == "" {
		t.Errorf("pod 2 parses to shard %q out %q model %q data %q", o.dist.shard, o.out, o.model, o.data)
	}
	mounts := map[string]bool{}
	for _, m := range c.VolumeMounts {
		mounts[m.MountPath] = true
	}
	for _, p := range []string{o.model, o.data, o.out} {
		if !mounts[filepath.Dir(p)] {
			t.Errorf("%s is on no mounted volume (%v)", p, c.VolumeMounts)
		}
	}
}

// TestDeployWorkers: the worker Deployment is a valid apps/v1 Deployment running `pipeline
// worker` with flags the worker command accepts.
func TestDeployWorkers(t *testing.T) {
	var d appsv1.Deployment
	readManifest(t, "worker-deployment.yaml", &d)
	if d.Kind != "Deployment" || d.APIVersion != "apps/v1" {
		t.Fatalf("kind %s/%s, want apps/v1 Deployment", d.APIVersion, d.Kind)
	}
	sel, labels := d.Spec.Selector.MatchLabels, d.Spec.Template.Labels
	for k, v := range sel {
		if labels[k] != v {
			t.Errorf("selector %v does not match the pod labels %v", sel, labels)
		}
	}
	c := d.Spec.Template.Spec.Containers[0]
	if len(c.Command) != 1 || c.Command[0] != "pipeline" || c.Args[0] != "worker" {
		t.Fatalf("command %v %v, want pipeline worker", c.Command, c.Args)
	}
	var o workerOptions
	parseArgs(t, "worker", c.Args[1:], o.addFlags)
	if !strings.HasPrefix(o.queue, "nats://") || o.model == "" || o.ackWait <= 0 {
		t.Errorf("worker parses to queue %q model %q ack-wait %v", o.queue, o.model, o.ackWait)
	}
}
