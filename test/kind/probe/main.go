// Command probe is the kind e2e's in-pod check that a pod reaches the API
// server through the kubernetes service: it asks for /version over HTTPS at
// the service VIP the kubelet puts in the pod's environment, verifying the
// server against the service account's CA, and prints the gitVersion. The
// busybox next to it in the probe image does ping and sleep.
//
// `probe source-addr ADDR` serves HTTP on ADDR and answers every request
// with the address the request came from: the egress test's outside host,
// which shows whether a pod's traffic left its node masqueraded; its path
// /10MiB answers 10 MiB instead, for transfers across nodes. `probe get URL`
// prints the body of URL and `probe count URL` its length (busybox's wget,
// static glibc, crashes in its resolver). `probe poll URL INTERVAL N` GETs
// URL N times, one every INTERVAL, each on a new connection with a 1 s
// timeout, and prints how many failed: the upgrade test's probe.
package main

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"time"
)

const caFile = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"

func main() {
	if len(os.Args) == 3 && os.Args[1] == "source-addr" {
		srv := &http.Server{
			Addr:              os.Args[2],
			ReadHeaderTimeout: 5 * time.Second,
			Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/10MiB" {
					_, _ = w.Write(make([]byte, 10<<20))
					return
				}
				host, _, _ := net.SplitHostPort(r.RemoteAddr)
				fmt.Fprintln(w, host)
			}),
		}
		fmt.Fprintln(os.Stderr, "probe:", srv.ListenAndServe())
		os.Exit(1)
	}
	if len(os.Args) == 3 && (os.Args[1] == "get" || os.Args[1] == "count") {
		client := &http.Client{Timeout: 30 * time.Second}
		resp, err := client.Get(os.Args[2])
		if err != nil {
			fmt.Fprintln(os.Stderr, "probe:", err)
			os.Exit(1)
		}
		defer resp.Body.Close()
		out := io.Writer(os.Stdout)
		if os.Args[1] == "count" {
			out = io.Discard
		}
		n, err := io.Copy(out, resp.Body)
		if err != nil || resp.StatusCode != http.StatusOK {
			fmt.Fprintln(os.Stderr, "probe:", resp.Status, n, err)
			os.Exit(1)
		}
		if os.Args[1] == "count" {
			fmt.Println(n)
		}
		return
	}
	if len(os.Args) == 5 && os.Args[1] == "poll" {
		os.Exit(poll(os.Args[2], os.Args[3], os.Args[4]))
	}
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "probe:", err)
		os.Exit(1)
	}
}

func run() error {
	host, port := os.Getenv("KUBERNETES_SERVICE_HOST"), os.Getenv("KUBERNETES_SERVICE_PORT")
	if host == "" || port == "" {
		return fmt.Errorf("KUBERNETES_SERVICE_HOST/PORT not set: not running in a pod?")
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return fmt.Errorf("read service account CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return fmt.Errorf("no certificate in %s", caFile)
	}
	client := &http.Client{
		Timeout:   10 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}},
	}
	url := "https://" + net.JoinHostPort(host, port) + "/version"
	resp, err := client.Get(url)
	if err != nil {
		return fmt.Errorf("get %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("get %s: %s", url, resp.Status)
	}
	var v struct {
		GitVersion string `json:"gitVersion"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		return fmt.Errorf("decode %s: %w", url, err)
	}
	fmt.Println(v.GitVersion)
	return nil
}

func poll(url, interval, count string) int {
	every, err := time.ParseDuration(interval)
	n, cerr := strconv.Atoi(count)
	if err != nil || cerr != nil || n < 1 || every <= 0 {
		fmt.Fprintln(os.Stderr, "probe: poll URL INTERVAL N: bad interval or count")
		return 2
	}
	client := &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	failed := 0
	tick := time.NewTicker(every)
	defer tick.Stop()
	for i := 0; i < n; i++ {
		resp, err := client.Get(url)
		if err == nil {
			_, err = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		if err != nil {
			failed++
			fmt.Fprintf(os.Stderr, "probe %d at %s: %v\n", i, time.Now().Format(time.RFC3339Nano), err)
		}
		<-tick.C
	}
	fmt.Printf("%d probes, %d failed\n", n, failed)
	return 0
}
