package main

import (
	"io"
	"net"
	"net/http"
	"strconv"
	"time"
)

// tunnel connects the request's connection to a TCP port inside the sandbox (its loopback), after
// a 101 answer: the gateway reaches a sandbox's servers this way, with no network of its own.
func tunnel(w http.ResponseWriter, r *http.Request, portText string) error {
	port, err := strconv.Atoi(portText)
	if err != nil || port < 1 || port > 65535 {
		return fail(http.StatusBadRequest, "invalid", "bad port %q", portText)
	}
	upstream, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", portText), 5*time.Second)
	if err != nil {
		upstream, err = net.DialTimeout("tcp", net.JoinHostPort("::1", portText), 5*time.Second)
	}
	if err != nil {
		return fail(http.StatusBadGateway, "port_closed", "nothing listens on port %d in the sandbox", port)
	}
	hijacker, ok := w.(http.Hijacker)
	if !ok {
		upstream.Close()
		return fail(http.StatusInternalServerError, "internal", "cannot take over the connection")
	}
	conn, buffered, err := hijacker.Hijack()
	if err != nil {
		upstream.Close()
		return err
	}
	_, _ = conn.Write([]byte("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: mayfly-tcp\r\n\r\n"))
	done := make(chan struct{}, 2)
	go func() {
		// Bytes the client sent right after its request were read into the buffer already.
		if n := buffered.Reader.Buffered(); n > 0 {
			peek, _ := buffered.Reader.Peek(n)
			_, _ = upstream.Write(peek)
		}
		_, _ = io.Copy(upstream, conn)
		if tcp, ok := upstream.(*net.TCPConn); ok {
			_ = tcp.CloseWrite()
		}
		done <- struct{}{}
	}()
	go func() {
		_, _ = io.Copy(conn, upstream)
		if unix, ok := conn.(*net.UnixConn); ok {
			_ = unix.CloseWrite()
		}
		done <- struct{}{}
	}()
	<-done
	<-done
	conn.Close()
	upstream.Close()
	return nil
}
