// go-hello: the greeting protocol as a Go user would write it, one goroutine per
// connection, bufio lines in, one conn.Write per reply (the shape of istio's
// tcp-echo-server). A reference point for tests/peers/compare, not a competitor: it
// stays plain, standard library only.
//
// go-hello --bind ADDR [--tls-cert FILE --tls-key FILE]: the same over crypto/tls,
// TLS 1.2 and 1.3, its defaults otherwise.
package main

import (
	"bufio"
	"crypto/tls"
	"flag"
	"log"
	"net"
	"strings"
)

func main() {
	bind := flag.String("bind", "", "address to listen on, HOST:PORT")
	certFile := flag.String("tls-cert", "", "serve TLS with this certificate chain (PEM)")
	keyFile := flag.String("tls-key", "", "and this private key (PEM)")
	flag.Parse()
	if *bind == "" || flag.NArg() != 0 || (*certFile == "") != (*keyFile == "") {
		log.Fatal("usage: go-hello --bind HOST:PORT [--tls-cert FILE --tls-key FILE]")
	}
	ln, err := net.Listen("tcp", *bind)
	if err != nil {
		log.Fatal(err)
	}
	if *certFile != "" {
		cert, err := tls.LoadX509KeyPair(*certFile, *keyFile)
		if err != nil {
			log.Fatal(err)
		}
		config := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		ln = tls.NewListener(ln, config)
	}
	for {
		conn, err := ln.Accept()
		if err != nil {
			log.Println("accept:", err)
			continue
		}
		go handle(conn)
	}
}

// handle runs the protocol: the welcome, a reply per line, the farewell after "exit".
func handle(conn net.Conn) {
	defer conn.Close() // over TLS, close_notify first
	if _, err := conn.Write([]byte("Welcome!\n")); err != nil {
		return
	}
	r := bufio.NewReader(conn)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		name := strings.TrimSuffix(strings.TrimSuffix(line, "\n"), "\r")
		if name == "exit" {
			conn.Write([]byte("Bye!\n"))
			return
		}
		if _, err := conn.Write([]byte("Hello, " + name + "!\n")); err != nil {
			return
		}
	}
}
