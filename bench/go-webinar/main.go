// go-webinar: the analyzer from AWS's Traffic Mirroring webinar ("DIY traffic mirroring" with
// gopacket), run on a pcap file instead of a live ENI, and counting flows instead of printing.
//
// usage: go-webinar FILE.pcap
//
// As in the webinar, every packet is decoded with gopacket.NewPacket (gopacket.Default options:
// eager, copying), the VXLAN layer is taken from it, and the inner Ethernet frame is decoded again
// with gopacket.NewPacket(vxlan.LayerPayload(), layers.LayerTypeEthernet, gopacket.Default). The
// inner IP 5-tuple then counts packets and bytes per bidirectional flow in a map, the same job as
// bench/naive_dpkt.py and MirrorScope's flow counting. The file is read with pcapgo (pure Go, no
// cgo/libpcap), record by record. Prints one JSON line like naive_dpkt.py.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"os"
	"runtime"
	"sort"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"
)

type endpoint struct {
	addr netip.Addr
	port uint16
}

func (e endpoint) less(o endpoint) bool {
	if c := e.addr.Compare(o.addr); c != 0 {
		return c < 0
	}
	return e.port < o.port
}

type flowKey struct {
	proto uint8
	a, b  endpoint
}

type counter struct{ packets, bytes uint64 }

type packetReader interface {
	ReadPacketData() ([]byte, gopacket.CaptureInfo, error)
	LinkType() layers.LinkType
}

func openReader(r *bufio.Reader) (packetReader, error) {
	magic, err := r.Peek(4)
	if err != nil {
		return nil, fmt.Errorf("reading the file header: %w", err)
	}
	if bytes.Equal(magic, []byte{0x0a, 0x0d, 0x0d, 0x0a}) {
		return pcapgo.NewNgReader(r, pcapgo.DefaultNgReaderOptions)
	}
	return pcapgo.NewReader(r)
}

func main() {
	if len(os.Args) != 2 || os.Args[1] == "-h" || os.Args[1] == "--help" {
		fmt.Fprintln(os.Stderr, "usage: go-webinar FILE.pcap")
		os.Exit(2)
	}
	path := os.Args[1]
	start := time.Now()
	f, err := os.Open(path)
	if err != nil {
		fmt.Fprintf(os.Stderr, "go-webinar: %v\n", err)
		os.Exit(1)
	}
	defer f.Close()
	src, err := openReader(bufio.NewReaderSize(f, 1<<20))
	if err != nil {
		fmt.Fprintf(os.Stderr, "go-webinar: %s: not a pcap/pcapng file: %v\n", path, err)
		os.Exit(1)
	}
	linkType := src.LinkType()

	flows := make(map[flowKey]*counter)
	var packets, vxlanPackets, notVXLAN, nonIP, totalBytes uint64
	for {
		data, _, err := src.ReadPacketData()
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			break
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "go-webinar: %s: %v\n", path, err)
			os.Exit(1)
		}
		packets++
		// The webinar's packetSource.Packets() does exactly this for each packet read.
		overlayPacket := gopacket.NewPacket(data, linkType, gopacket.Default)
		// Check if VXLAN header is inside the packet
		vxlanLayer := overlayPacket.Layer(layers.LayerTypeVXLAN)
		if vxlanLayer == nil {
			notVXLAN++
			continue
		}
		vxlanPacket, _ := vxlanLayer.(*layers.VXLAN)
		// Create a new packet with the mirrored Ethernet frame that is inside the VXLAN packet
		packet := gopacket.NewPacket(vxlanPacket.LayerPayload(), layers.LayerTypeEthernet, gopacket.Default)
		vxlanPackets++

		var key flowKey
		var length uint64
		switch ip := packet.NetworkLayer().(type) {
		case *layers.IPv4:
			a, _ := netip.AddrFromSlice(ip.SrcIP.To4())
			b, _ := netip.AddrFromSlice(ip.DstIP.To4())
			key = flowKey{proto: uint8(ip.Protocol), a: endpoint{addr: a}, b: endpoint{addr: b}}
			length = uint64(ip.Length)
		case *layers.IPv6:
			a, _ := netip.AddrFromSlice(ip.SrcIP)
			b, _ := netip.AddrFromSlice(ip.DstIP)
			key = flowKey{proto: uint8(ip.NextHeader), a: endpoint{addr: a}, b: endpoint{addr: b}}
			length = uint64(ip.Length) + 40
		default:
			nonIP++
			continue
		}
		switch l4 := packet.TransportLayer().(type) {
		case *layers.TCP:
			key.a.port, key.b.port = uint16(l4.SrcPort), uint16(l4.DstPort)
		case *layers.UDP:
			key.a.port, key.b.port = uint16(l4.SrcPort), uint16(l4.DstPort)
		}
		if key.b.less(key.a) {
			key.a, key.b = key.b, key.a
		}
		c := flows[key]
		if c == nil {
			c = &counter{}
			flows[key] = c
		}
		c.packets++
		c.bytes += length
		totalBytes += length
	}
	seconds := time.Since(start).Seconds()

	type top struct {
		Proto   uint8  `json:"proto"`
		A       string `json:"a"`
		B       string `json:"b"`
		Packets uint64 `json:"packets"`
		Bytes   uint64 `json:"bytes"`
	}
	tops := make([]top, 0, len(flows))
	for k, v := range flows {
		tops = append(tops, top{k.proto, fmt.Sprintf("%s:%d", k.a.addr, k.a.port),
			fmt.Sprintf("%s:%d", k.b.addr, k.b.port), v.packets, v.bytes})
	}
	sort.Slice(tops, func(i, j int) bool { return tops[i].Bytes > tops[j].Bytes })
	if len(tops) > 3 {
		tops = tops[:3]
	}
	out := map[string]any{
		"tool":          "go_webinar",
		"file":          path,
		"packets":       packets,
		"vxlan_packets": vxlanPackets,
		"flows":         len(flows),
		"bytes":         totalBytes,
		"not_vxlan":     notVXLAN,
		"non_ip_inner":  nonIP,
		"seconds":       float64(int64(seconds*1e4)) / 1e4,
		"packets_per_s": float64(int64(float64(packets)/seconds*10)) / 10,
		"go":            runtime.Version(),
		"gomaxprocs":    runtime.GOMAXPROCS(0),
		"top_flows":     tops,
	}
	enc := json.NewEncoder(os.Stdout)
	if err := enc.Encode(out); err != nil {
		os.Exit(1)
	}
}
