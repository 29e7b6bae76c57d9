// Command vcsim starts govmomi's vCenter simulator with a VPX inventory on a loopback address and
// prints its SDK URL on stdout; it stops on SIGTERM or SIGINT. HCP's vSphere tests run it as a
// child process (see ../peer.sh, which builds it from Debian's govmomi sources).
package main

import (
	"crypto/tls"
	"flag"
	"fmt"
	"log"
	"net/url"
	"os"
	"os/signal"
	"syscall"

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
	flag.Parse()
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
	m.Service.TLS = new(tls.Config)
	s := m.Service.NewServer()
	fmt.Println(s.URL.String())
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	s.Close()
}
