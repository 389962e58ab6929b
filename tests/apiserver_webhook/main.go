// Command client sends audit events to a webhook with kube-apiserver's own audit code: the
// events are built by the request-audit helpers of k8s.io/apiserver/pkg/audit at the level the
// audit policy decides, and delivered by the webhook backend (configured from a kubeconfig file,
// as --audit-webhook-config-file) wrapped in the buffered (batch) backend, wired as
// kube-apiserver wires them. The end-to-end tests of ContainerTrail use it as their sender.
//
// It writes the audit IDs it sent to --ids-out, one a line, prints a JSON summary on stdout, and
// exits 0 only when the webhook backend delivered every event (a 2xx for each batch).
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/http/httptest"
	"os"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/types"
	auditinternal "k8s.io/apiserver/pkg/apis/audit"
	"k8s.io/apiserver/pkg/audit"
	"k8s.io/apiserver/pkg/audit/policy"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/authorization/authorizer"
	utilwebhook "k8s.io/apiserver/pkg/util/webhook"
	"k8s.io/apiserver/plugin/pkg/audit/buffered"
	"k8s.io/apiserver/plugin/pkg/audit/webhook"
)

// counting observes a backend: how many events were offered to it, and how many it took.
type counting struct {
	audit.Backend
	offered, accepted atomic.Int64
}

func (c *counting) ProcessEvents(events ...*auditinternal.Event) bool {
	c.offered.Add(int64(len(events)))
	ok := c.Backend.ProcessEvents(events...)
	if ok {
		c.accepted.Add(int64(len(events)))
	}
	return ok
}

var (
	coreV1     = schema.GroupVersion{Version: "v1"}
	codecs     = newCodecs()
	podsGVR    = coreV1.WithResource("pods")
	secretsGVR = coreV1.WithResource("secrets")
)

func newCodecs() serializer.CodecFactory {
	scheme := runtime.NewScheme()
	if err := corev1.AddToScheme(scheme); err != nil {
		panic(err)
	}
	return serializer.NewCodecFactory(scheme)
}

// request is one API request as the audit filter sees it.
type request struct {
	method, uri string
	attrs       authorizer.AttributesRecord
	code        int32
	reqObj      runtime.Object
	gvr         schema.GroupVersionResource
	respObj     runtime.Object
}

var users = []*user.DefaultInfo{
	{Name: "alice", UID: "3b0d7c0e-alice", Groups: []string{"developers", "system:authenticated"}},
	{Name: "system:serviceaccount:ci:deployer", UID: "9f1e2d3c-deployer",
		Groups: []string{"system:serviceaccounts", "system:serviceaccounts:ci", "system:authenticated"}},
	{Name: "bob", UID: "5a6b7c8d-bob", Groups: []string{"sre", "system:authenticated"}},
}

func pod(ns, name string, created bool) *corev1.Pod {
	p := &corev1.Pod{
		TypeMeta:   metav1.TypeMeta{Kind: "Pod", APIVersion: "v1"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{"app": "web"}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{
			Name: "app", Image: "registry.example.com/team/web:1.4.2",
			Ports: []corev1.ContainerPort{{ContainerPort: 8080}},
		}}},
	}
	if created {
		p.UID = types.UID(uuid.NewString())
		p.ResourceVersion = "48213"
		p.CreationTimestamp = metav1.Now()
		p.Status.Phase = corev1.PodPending
	}
	return p
}

func secret(ns, name, value string, created bool) *corev1.Secret {
	s := &corev1.Secret{
		TypeMeta:   metav1.TypeMeta{Kind: "Secret", APIVersion: "v1"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Type:       corev1.SecretTypeOpaque,
		Data:       map[string][]byte{"password": []byte(value)},
	}
	if created {
		s.UID = types.UID(uuid.NewString())
		s.ResourceVersion = "48214"
		s.CreationTimestamp = metav1.Now()
	}
	return s
}

// requestFor is the i-th request: get, list, create and delete of pods, an exec into a pod, and
// the create of a secret with data.
func requestFor(i int, secretValue string) request {
	u := users[i%len(users)]
	ns := []string{"default", "payments", "ci"}[i%3]
	name := fmt.Sprintf("web-%d", i)
	base := fmt.Sprintf("/api/v1/namespaces/%s", ns)
	attrs := authorizer.AttributesRecord{User: u, Namespace: ns, APIVersion: "v1",
		Resource: "pods", ResourceRequest: true}
	switch i % 6 {
	case 0:
		attrs.Verb, attrs.Name = "get", name
		return request{method: "GET", uri: base + "/pods/" + name, attrs: attrs, code: 200}
	case 1:
		attrs.Verb = "list"
		return request{method: "GET", uri: base + "/pods?limit=500", attrs: attrs, code: 200}
	case 2:
		attrs.Verb = "create"
		return request{method: "POST", uri: base + "/pods", attrs: attrs, code: 201,
			reqObj: pod(ns, name, false), gvr: podsGVR, respObj: pod(ns, name, true)}
	case 3:
		attrs.Verb, attrs.Name = "delete", name
		return request{method: "DELETE", uri: base + "/pods/" + name, attrs: attrs, code: 200,
			respObj: pod(ns, name, true)}
	case 4:
		attrs.Verb, attrs.Name, attrs.Subresource = "create", name, "exec"
		return request{method: "POST", attrs: attrs, code: 101, uri: base + "/pods/" + name +
			"/exec?command=sh&container=app&stdin=true&stdout=true&tty=true"}
	default:
		attrs.Verb, attrs.Resource = "create", "secrets"
		sname := fmt.Sprintf("db-credentials-%d", i)
		return request{method: "POST", uri: base + "/secrets", attrs: attrs, code: 201,
			reqObj: secret(ns, sname, secretValue, false), gvr: secretsGVR,
			respObj: secret(ns, sname, secretValue, true)}
	}
}

// serve audits one request the way the apiserver's audit filter and handlers do.
func serve(evaluator audit.PolicyRuleEvaluator, sink audit.Sink, r request, i int) (types.UID, bool) {
	received := time.Now()
	ctx := audit.WithAuditContext(context.Background())
	auditID := types.UID(uuid.NewString())
	audit.WithAuditID(ctx, auditID)
	ac := audit.AuditContextFrom(ctx)
	config := evaluator.EvaluatePolicyRule(r.attrs)
	if config.Level == auditinternal.LevelNone {
		return auditID, false
	}
	if err := ac.Init(config, sink); err != nil {
		panic(err)
	}
	req := httptest.NewRequest(r.method, r.uri, nil)
	req.RemoteAddr = fmt.Sprintf("192.0.2.%d:%d", 1+i%250, 40000+i%20000)
	req.Header.Set("User-Agent", "kubectl/v1.37.2 (linux/amd64) kubernetes/4a1c2e3")
	audit.LogRequestMetadata(ctx, req, received, r.attrs)
	audit.AddAuditAnnotations(ctx, "authorization.k8s.io/decision", "allow",
		"authorization.k8s.io/reason", `RBAC: allowed by ClusterRoleBinding "edit"`)
	sent := ac.ProcessEventStage(ctx, auditinternal.StageRequestReceived)
	if r.reqObj != nil {
		audit.LogRequestObject(ctx, r.reqObj, coreV1, r.gvr, r.attrs.Subresource, codecs)
	}
	if r.respObj != nil {
		ac.SetEventResponseStatusCode(r.code)
		audit.LogResponseObject(ctx, r.respObj, coreV1, codecs)
	} else {
		ac.SetEventResponseStatus(&metav1.Status{Code: r.code})
	}
	sent = ac.ProcessEventStage(ctx, auditinternal.StageResponseComplete) && sent
	return auditID, sent
}

func main() {
	var (
		kubeconfig  = flag.String("kubeconfig", "", "kubeconfig of the webhook (as --audit-webhook-config-file)")
		policyFile  = flag.String("policy", "", "audit policy file (as --audit-policy-file)")
		events      = flag.Int("events", 1000, "requests to audit")
		rate        = flag.Float64("rate", 0, "requests per second (0: as fast as possible)")
		secretValue = flag.String("secret-value", "s3cr3t", "the value of every secret created")
		idsOut      = flag.String("ids-out", "", "write the audit IDs sent here, one a line")
		backoff     = flag.Duration("initial-backoff", webhook.DefaultInitialBackoffDelay,
			"as --audit-webhook-initial-backoff")
		batch = buffered.BatchConfig{ThrottleEnable: true, AsyncDelegate: true}
	)
	flag.IntVar(&batch.BufferSize, "batch-buffer-size", 10000, "as --audit-webhook-batch-buffer-size")
	flag.IntVar(&batch.MaxBatchSize, "batch-max-size", 400, "as --audit-webhook-batch-max-size")
	flag.DurationVar(&batch.MaxBatchWait, "batch-max-wait", 30*time.Second, "as --audit-webhook-batch-max-wait")
	var qps float64
	flag.Float64Var(&qps, "batch-throttle-qps", 10, "as --audit-webhook-batch-throttle-qps")
	flag.IntVar(&batch.ThrottleBurst, "batch-throttle-burst", 15, "as --audit-webhook-batch-throttle-burst")
	flag.Parse()
	batch.ThrottleQPS = float32(qps)
	if *kubeconfig == "" || *policyFile == "" {
		fmt.Fprintln(os.Stderr, "client: --kubeconfig and --policy are required")
		os.Exit(2)
	}

	pol, err := policy.LoadPolicyFromFile(*policyFile)
	if err != nil {
		fmt.Fprintln(os.Stderr, "client:", err)
		os.Exit(2)
	}
	evaluator := policy.NewPolicyRuleEvaluator(pol)
	// kube-apiserver passes its egress dialer here; this one counts the connections that failed
	// (a listener down), so a test can tell that the backend's retries were exercised.
	var dials, failedDials atomic.Int64
	dialer := &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}
	dial := func(ctx context.Context, network, address string) (net.Conn, error) {
		dials.Add(1)
		conn, err := dialer.DialContext(ctx, network, address)
		if err != nil {
			failedDials.Add(1)
		}
		return conn, err
	}
	hook, err := webhook.NewBackend(*kubeconfig, auditv1GroupVersion(),
		utilwebhook.DefaultRetryBackoffWithInitialDelay(*backoff), dial)
	if err != nil {
		fmt.Fprintln(os.Stderr, "client:", err)
		os.Exit(2)
	}
	delivered := &counting{Backend: hook}
	backend := buffered.NewBackend(delivered, batch)
	submitted := &counting{Backend: backend}
	stop := make(chan struct{})
	if err := backend.Run(stop); err != nil {
		fmt.Fprintln(os.Stderr, "client:", err)
		os.Exit(2)
	}

	ids := make([]string, 0, *events)
	start := time.Now()
	for i := 0; i < *events; i++ {
		if *rate > 0 {
			if wait := time.Until(start.Add(time.Duration(float64(i) / *rate * float64(time.Second)))); wait > 0 {
				time.Sleep(wait)
			}
		}
		if id, sent := serve(evaluator, submitted, requestFor(i, *secretValue), i); sent {
			ids = append(ids, string(id))
		}
	}
	close(stop)
	backend.Shutdown() // flushes the buffer and waits for every batch, retries included
	elapsed := time.Since(start)

	if *idsOut != "" {
		out := []byte{}
		for _, id := range ids {
			out = append(out, id...)
			out = append(out, '\n')
		}
		if err := os.WriteFile(*idsOut, out, 0o600); err != nil {
			fmt.Fprintln(os.Stderr, "client:", err)
			os.Exit(2)
		}
	}
	summary := map[string]any{
		"requests": *events, "events": submitted.offered.Load(),
		"batched": delivered.offered.Load(), "delivered": delivered.accepted.Load(),
		"seconds": elapsed.Seconds(), "dials": dials.Load(), "failed_dials": failedDials.Load(),
	}
	line, _ := json.Marshal(summary)
	fmt.Println(string(line))
	if len(ids) != *events || delivered.accepted.Load() != submitted.offered.Load() ||
		delivered.offered.Load() != submitted.offered.Load() {
		fmt.Fprintln(os.Stderr, "client: not every event was delivered")
		os.Exit(1)
	}
}

func auditv1GroupVersion() schema.GroupVersion {
	return schema.GroupVersion{Group: auditinternal.GroupName, Version: "v1"}
}
