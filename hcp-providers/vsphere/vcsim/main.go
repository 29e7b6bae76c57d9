// Command vcsim starts govmomi's vCenter simulator with a VPX inventory on a loopback address and
// prints its SDK URL on stdout; it stops on SIGTERM or SIGINT. HCP's vSphere tests run it as a
// child process (see ../peer.sh, which builds it from Debian's govmomi sources).
//
// It serves a certificate of its own (ECDSA P-256, for 127.0.0.1, ::1 and localhost) signed by a
// CA made at start-up, whose PEM it writes to -ca-out: Go's built-in test certificate is RSA 1024,
// which rustls rightly refuses.
package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"flag"
	"fmt"
	"log"
	"math/big"
	"net"
	"net/url"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/vmware/govmomi/simulator"
	_ "github.com/vmware/govmomi/vapi/simulator"
)

func main() {
	m := simulator.VPX()
	listen := flag.String("l", "127.0.0.1:8989", "listen address")
	user := flag.String("userpass", "", "user:pass to enforce (default: any login works)")
	flag.IntVar(&m.Datacenter, "dc", m.Datacenter, "datacenters")
	flag.IntVar(&m.Cluster, "cluster", m.Cluster, "clusters per datacenter")
	flag.IntVar(&m.ClusterHost, "host", m.ClusterHost, "hosts per cluster")
	flag.IntVar(&m.Host, "standalone-host", m.Host, "standalone hosts per datacenter")
	flag.IntVar(&m.Pool, "pool", m.Pool, "resource pools per cluster")
	flag.IntVar(&m.Machine, "vm", m.Machine, "VMs per resource pool")
	flag.IntVar(&m.Datastore, "ds", m.Datastore, "datastores")
	flag.IntVar(&m.Portgroup, "pg", m.Portgroup, "port groups")
	flag.IntVar(&m.DelayConfig.Delay, "delay", 0, "ms added to every method")
	caOut := flag.String("ca-out", "", "file to write the CA certificate (PEM) to")
	flag.Parse()
	cert, caPEM, err := certificate()
	if err != nil {
		log.Fatal(err)
	}
	if *caOut != "" {
		if err := os.WriteFile(*caOut, caPEM, 0o644); err != nil {
			log.Fatal(err)
		}
	}
	if err := m.Create(); err != nil {
		log.Fatal(err)
	}
	defer m.Remove()
	m.Service.RegisterEndpoints = true
	m.Service.Listen = &url.URL{Host: *listen}
	if *user != "" {
		u, _ := url.Parse("https://" + *user + "@x")
		m.Service.Listen.User = u.User
	}
	m.Service.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	s := m.Service.NewServer()
	fmt.Println(s.URL.String())
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	s.Close()
}

// certificate makes a CA and a server certificate it signs; it returns the server's key pair and
// the CA's PEM.
func certificate() (tls.Certificate, []byte, error) {
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	ca := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "hcp vcsim test CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	leaf := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "127.0.0.1"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1")},
		DNSNames:     []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, leaf, ca, &key.PublicKey, caKey)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	return tls.Certificate{Certificate: [][]byte{der, caDER}, PrivateKey: key}, caPEM, nil
}
