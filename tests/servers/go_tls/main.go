// go_tls: Go's crypto/tls as a TLS server or client for mimic's tests
// (standard library only). Built by the tests (tests/servers/go_tls.ts).
//
// Server: go_tls -mode server -cert C -key K [-addr 127.0.0.1:0] [-count N]
//
//	prints {"port":P} on its first line, then accepts N connections one at a
//	time (0: forever); for each: handshake, one JSON line of what was agreed,
//	then echoes what it reads until the peer's end (or, with -send, writes
//	that text and half-closes first), then closes with close_notify.
//
// Client: go_tls -mode client -connect HOST:PORT [-count N] [-send TEXT]
//
//	makes N connections one after the other (one session cache, so the
//	later ones may resume); for each: handshake, writes -send (if any),
//	half-closes, reads to the end, prints one JSON line.
//
// Both: -curves X25519MLKEM768,X25519,CurveP256,CurveP384 (Go's names, or
// IANA: x25519, secp256r1, secp384r1), -min/-max 1.2|1.3, -ciphers
// (IANA names; Go applies them to TLS 1.2 only), -alpn a,b, -keylog FILE,
// -export-label L -export-len N [-export-context HEX] (exporter in the JSON
// line, hex), -ca PEM (client: trusted roots; server: requires a client
// certificate signed by it), -servername NAME, -insecure (client).
package main

import (
	"bufio"
	"crypto/ecdh"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"
)

var (
	mode       = flag.String("mode", "server", "server or client")
	addr       = flag.String("addr", "127.0.0.1:0", "server: listen address")
	connect    = flag.String("connect", "", "client: HOST:PORT")
	count      = flag.Int("count", 1, "connections (server: 0 = forever)")
	certFile   = flag.String("cert", "", "certificate chain PEM")
	keyFile    = flag.String("key", "", "private key PEM")
	caFile     = flag.String("ca", "", "CA PEM (client roots / required client CA)")
	serverName = flag.String("servername", "localhost", "client: SNI and name verified")
	insecure   = flag.Bool("insecure", false, "client: skip verification")
	curves     = flag.String("curves", "", "key exchange groups, comma separated")
	minV       = flag.String("min", "", "minimum version: 1.2 or 1.3")
	maxV       = flag.String("max", "", "maximum version: 1.2 or 1.3")
	ciphers    = flag.String("ciphers", "", "cipher suites (IANA), comma separated")
	alpn       = flag.String("alpn", "", "ALPN protocols, comma separated")
	keylog     = flag.String("keylog", "", "NSS key log file (appended)")
	expLabel   = flag.String("export-label", "", "exporter label")
	expLen     = flag.Int("export-len", 32, "exporter length")
	expCtx     = flag.String("export-context", "", "exporter context, hex (absent: none)")
	send       = flag.String("send", "", "text to write after the handshake")
	noTickets  = flag.Bool("no-tickets", false, "server: no session tickets")
	echName    = flag.String("ech-public-name", "", "server: accept Encrypted Client Hello; its ECHConfigList (base64) is in the first line")
)

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "go_tls: "+format+"\n", args...)
	os.Exit(1)
}

func version(s string) uint16 {
	switch s {
	case "":
		return 0
	case "1.2", "TLSv1.2":
		return tls.VersionTLS12
	case "1.3", "TLSv1.3":
		return tls.VersionTLS13
	}
	fail("unknown version %q", s)
	return 0
}

func versionName(v uint16) string {
	switch v {
	case tls.VersionTLS12:
		return "TLSv1.2"
	case tls.VersionTLS13:
		return "TLSv1.3"
	}
	return fmt.Sprintf("0x%04x", v)
}

func split(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}

func curveList() []tls.CurveID {
	var out []tls.CurveID
	for _, name := range split(*curves) {
		switch strings.ToLower(name) {
		case "x25519mlkem768":
			out = append(out, tls.X25519MLKEM768)
		case "x25519":
			out = append(out, tls.X25519)
		case "curvep256", "secp256r1", "p256", "p-256":
			out = append(out, tls.CurveP256)
		case "curvep384", "secp384r1", "p384", "p-384":
			out = append(out, tls.CurveP384)
		case "curvep521", "secp521r1":
			out = append(out, tls.CurveP521)
		default:
			fail("unknown curve %q", name)
		}
	}
	return out
}

func cipherList() []uint16 {
	var out []uint16
	all := append(tls.CipherSuites(), tls.InsecureCipherSuites()...)
	for _, name := range split(*ciphers) {
		found := false
		for _, s := range all {
			if s.Name == name {
				out = append(out, s.ID)
				found = true
			}
		}
		if !found && !strings.HasPrefix(name, "TLS_AES_") && !strings.HasPrefix(name, "TLS_CHACHA20_") {
			fail("unknown cipher suite %q", name)
		}
	}
	return out
}

// groupName: the IANA name of a CurveID (Go's String() says "CurveP256").
func groupName(id tls.CurveID) string {
	switch id {
	case 0:
		return ""
	case tls.X25519MLKEM768:
		return "X25519MLKEM768"
	case tls.X25519:
		return "x25519"
	case tls.CurveP256:
		return "secp256r1"
	case tls.CurveP384:
		return "secp384r1"
	case tls.CurveP521:
		return "secp521r1"
	}
	return id.String()
}

type report struct {
	Version     string `json:"version"`
	CipherSuite string `json:"cipherSuite"`
	Group       string `json:"group"`
	Resumed     bool   `json:"resumed"`
	ALPN        string `json:"alpn"`
	ServerName  string `json:"serverName"`
	Exporter    string `json:"exporter,omitempty"`
	PeerCerts   int    `json:"peerCertificates"`
	ECH         bool   `json:"ech"`
	Received    string `json:"received"`
	Error       string `json:"error,omitempty"`
}

func describe(cs tls.ConnectionState) report {
	r := report{
		Version:     versionName(cs.Version),
		CipherSuite: tls.CipherSuiteName(cs.CipherSuite),
		Group:       groupName(cs.CurveID),
		Resumed:     cs.DidResume,
		ALPN:        cs.NegotiatedProtocol,
		ServerName:  cs.ServerName,
		PeerCerts:   len(cs.PeerCertificates),
		ECH:         cs.ECHAccepted,
	}
	if *expLabel != "" {
		var ctx []byte
		if *expCtx != "" || flagSet("export-context") {
			var err error
			if ctx, err = hex.DecodeString(*expCtx); err != nil {
				fail("export-context: %v", err)
			}
			if ctx == nil {
				ctx = []byte{}
			}
		}
		key, err := cs.ExportKeyingMaterial(*expLabel, ctx, *expLen)
		if err != nil {
			r.Error = "exporter: " + err.Error()
		} else {
			r.Exporter = hex.EncodeToString(key)
		}
	}
	return r
}

func flagSet(name string) bool {
	set := false
	flag.Visit(func(f *flag.Flag) {
		if f.Name == name {
			set = true
		}
	})
	return set
}

var out = bufio.NewWriter(os.Stdout)

func emit(v any) {
	b, _ := json.Marshal(v)
	out.Write(b)
	out.WriteByte('\n')
	out.Flush()
}

func config() *tls.Config {
	cfg := &tls.Config{
		MinVersion:       version(*minV),
		MaxVersion:       version(*maxV),
		CurvePreferences: curveList(),
		CipherSuites:     cipherList(),
		NextProtos:       split(*alpn),
	}
	if *keylog != "" {
		f, err := os.OpenFile(*keylog, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			fail("keylog: %v", err)
		}
		cfg.KeyLogWriter = f
	}
	if *certFile != "" {
		pair, err := tls.LoadX509KeyPair(*certFile, *keyFile)
		if err != nil {
			fail("cert/key: %v", err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	if *caFile != "" {
		pem, err := os.ReadFile(*caFile)
		if err != nil {
			fail("ca: %v", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			fail("ca: no certificate")
		}
		if *mode == "server" {
			cfg.ClientCAs = pool
			cfg.ClientAuth = tls.RequireAndVerifyClientCert
		} else {
			cfg.RootCAs = pool
		}
	}
	return cfg
}

// echConfig: one ECHConfig (draft-ietf-tls-esni, version 0xfe0d) for an
// X25519 key, HKDF-SHA256 with AES-128-GCM or ChaCha20-Poly1305.
func echConfig(id uint8, pub []byte, publicName string) []byte {
	u16 := binary.BigEndian.AppendUint16
	var c []byte
	c = append(c, id)
	c = u16(c, 0x0020) // DHKEM(X25519, HKDF-SHA256)
	c = u16(c, uint16(len(pub)))
	c = append(c, pub...)
	c = u16(c, 8)
	c = u16(u16(c, 0x0001), 0x0001) // HKDF-SHA256, AES-128-GCM
	c = u16(u16(c, 0x0001), 0x0003) // HKDF-SHA256, ChaCha20-Poly1305
	c = append(c, 0)                // maximum_name_length
	c = append(c, uint8(len(publicName)))
	c = append(c, publicName...)
	c = u16(c, 0) // no extensions
	out := u16(nil, 0xfe0d)
	out = u16(out, uint16(len(c)))
	return append(out, c...)
}

func serve() {
	cfg := config()
	cfg.SessionTicketsDisabled = *noTickets
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		fail("listen: %v", err)
	}
	first := map[string]any{"port": ln.Addr().(*net.TCPAddr).Port}
	if *echName != "" {
		key, err := ecdh.X25519().GenerateKey(rand.Reader)
		if err != nil {
			fail("ech key: %v", err)
		}
		config := echConfig(1, key.PublicKey().Bytes(), *echName)
		cfg.EncryptedClientHelloKeys = []tls.EncryptedClientHelloKey{{
			Config: config, PrivateKey: key.Bytes(), SendAsRetry: true,
		}}
		list := binary.BigEndian.AppendUint16(nil, uint16(len(config)))
		first["echConfigList"] = base64.StdEncoding.EncodeToString(append(list, config...))
	}
	emit(first)
	for i := 0; *count == 0 || i < *count; i++ {
		raw, err := ln.Accept()
		if err != nil {
			fail("accept: %v", err)
		}
		conn := tls.Server(raw, cfg)
		conn.SetDeadline(time.Now().Add(60 * time.Second))
		if err := conn.Handshake(); err != nil {
			emit(report{Error: err.Error()})
			raw.Close()
			continue
		}
		r := describe(conn.ConnectionState())
		emit(r)
		if *send != "" {
			io.WriteString(conn, *send)
			conn.CloseWrite()
			io.Copy(io.Discard, conn)
		} else {
			io.Copy(conn, conn)
			conn.CloseWrite()
		}
		conn.Close()
	}
}

func client() {
	cfg := config()
	cfg.ServerName = *serverName
	cfg.InsecureSkipVerify = *insecure
	cfg.ClientSessionCache = tls.NewLRUClientSessionCache(16)
	for i := 0; i < *count; i++ {
		raw, err := net.DialTimeout("tcp", *connect, 30*time.Second)
		if err != nil {
			fail("dial: %v", err)
		}
		conn := tls.Client(raw, cfg)
		conn.SetDeadline(time.Now().Add(60 * time.Second))
		if err := conn.Handshake(); err != nil {
			emit(report{Error: err.Error()})
			raw.Close()
			os.Exit(2)
		}
		r := describe(conn.ConnectionState())
		if *send != "" {
			io.WriteString(conn, *send)
		}
		conn.CloseWrite()
		got, err := io.ReadAll(conn)
		r.Received = string(got)
		if err != nil {
			r.Error = err.Error()
		}
		emit(r)
		conn.Close()
	}
}

func main() {
	flag.Parse()
	switch *mode {
	case "server":
		serve()
	case "client":
		client()
	default:
		fail("unknown mode %q", *mode)
	}
}
