//go:build linux

package kubeapi

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// pki is the key material of one test cluster, generated fresh per Start so
// no key is ever committed or shared between tests.
type pki struct {
	caPEM        []byte
	adminCertPEM []byte
	adminKeyPEM  []byte
	adminPair    tls.Certificate

	// Paths of the files kube-apiserver reads.
	caCert, servingCert, servingKey, saKey, saPub string
}

// newPKI generates a CA, a serving certificate for 127.0.0.1, an admin
// client certificate (O=system:masters, which RBAC lets do anything) and a
// service-account signing key pair, and writes what kube-apiserver needs
// under dir/pki.
func newPKI(dir string) (*pki, error) {
	d := filepath.Join(dir, "pki")
	if err := os.MkdirAll(d, 0o700); err != nil {
		return nil, fmt.Errorf("create pki dir: %w", err)
	}
	p := &pki{
		caCert:      filepath.Join(d, "ca.crt"),
		servingCert: filepath.Join(d, "apiserver.crt"),
		servingKey:  filepath.Join(d, "apiserver.key"),
		saKey:       filepath.Join(d, "sa.key"),
		saPub:       filepath.Join(d, "sa.pub"),
	}

	// Backdated so a slightly skewed clock does not make fresh certs "not
	// yet valid"; a day outlives any test.
	notBefore := time.Now().Add(-time.Hour)
	notAfter := notBefore.Add(25 * time.Hour)

	caKey, err := newKey()
	if err != nil {
		return nil, err
	}
	caTmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: "vethroute-test-ca"},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, caCert, err := sign(caTmpl, caKey.Public(), nil, caKey)
	if err != nil {
		return nil, fmt.Errorf("self-sign CA: %w", err)
	}
	p.caPEM = pemBlock("CERTIFICATE", caDER)

	servingKey, err := newKey()
	if err != nil {
		return nil, err
	}
	servingDER, _, err := sign(&x509.Certificate{
		Subject:     pkix.Name{CommonName: "kube-apiserver"},
		NotBefore:   notBefore,
		NotAfter:    notAfter,
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		// The in-cluster names too, for clients built from a
		// kubeconfig that names the service rather than the IP.
		DNSNames: []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"},
	}, servingKey.Public(), caCert, caKey)
	if err != nil {
		return nil, fmt.Errorf("sign serving cert: %w", err)
	}

	adminKey, err := newKey()
	if err != nil {
		return nil, err
	}
	adminDER, _, err := sign(&x509.Certificate{
		Subject:     pkix.Name{CommonName: "kubeapi-admin", Organization: []string{"system:masters"}},
		NotBefore:   notBefore,
		NotAfter:    notAfter,
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, adminKey.Public(), caCert, caKey)
	if err != nil {
		return nil, fmt.Errorf("sign admin cert: %w", err)
	}
	p.adminCertPEM = pemBlock("CERTIFICATE", adminDER)
	if p.adminKeyPEM, err = keyPEM(adminKey); err != nil {
		return nil, err
	}
	if p.adminPair, err = tls.X509KeyPair(p.adminCertPEM, p.adminKeyPEM); err != nil {
		return nil, fmt.Errorf("load admin key pair: %w", err)
	}

	saKey, err := newKey()
	if err != nil {
		return nil, err
	}
	saPubDER, err := x509.MarshalPKIXPublicKey(saKey.Public())
	if err != nil {
		return nil, fmt.Errorf("marshal service-account public key: %w", err)
	}

	servingKeyPEM, err := keyPEM(servingKey)
	if err != nil {
		return nil, err
	}
	saKeyPEM, err := keyPEM(saKey)
	if err != nil {
		return nil, err
	}
	for path, data := range map[string][]byte{
		p.caCert:      p.caPEM,
		p.servingCert: pemBlock("CERTIFICATE", servingDER),
		p.servingKey:  servingKeyPEM,
		p.saKey:       saKeyPEM,
		p.saPub:       pemBlock("PUBLIC KEY", saPubDER),
	} {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			return nil, fmt.Errorf("write %s: %w", path, err)
		}
	}
	return p, nil
}

// newKey returns a P-256 key: kube-apiserver accepts ECDSA for serving,
// client and service-account keys, and it is much faster to generate than
// RSA, which matters when every test makes four.
func newKey() (*ecdsa.PrivateKey, error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	return k, nil
}

// sign fills in the serial number and signs tmpl with parentKey; a nil
// parent makes it self-signed.
func sign(tmpl *x509.Certificate, pub crypto.PublicKey, parent *x509.Certificate, parentKey crypto.Signer) ([]byte, *x509.Certificate, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, nil, fmt.Errorf("serial number: %w", err)
	}
	tmpl.SerialNumber = serial
	if parent == nil {
		parent = tmpl
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, parentKey)
	if err != nil {
		return nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("parse generated cert: %w", err)
	}
	return der, cert, nil
}

// keyPEM encodes k as PKCS#8, which both Go's tls and kube-apiserver read.
func keyPEM(k *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, fmt.Errorf("marshal private key: %w", err)
	}
	return pemBlock("PRIVATE KEY", der), nil
}

// pemBlock wraps der in a PEM block of the given type.
func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}
