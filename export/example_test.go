package export_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net"
	"strconv"
	"time"

	"github.com/gonbd/gonbd/export"
	"github.com/gonbd/gonbd/nbd"
)

// fillBackend is a read-only disk on which every byte has the same value.
// It implements export.Backend and the optional export.ReadOnlyer, so the
// server advertises the export as read-only.
type fillBackend struct {
	size  int64
	value byte
}

func (b *fillBackend) ReadAt(p []byte, off int64) (int, error) {
	for i := range p {
		p[i] = b.value
	}
	return len(p), nil
}

func (b *fillBackend) WriteAt(p []byte, off int64) (int, error) {
	return 0, export.ErrReadOnly
}

func (b *fillBackend) Size() (int64, error) { return b.size, nil }
func (b *fillBackend) Sync() error          { return nil }
func (b *fillBackend) ReadOnly() bool       { return true }

// openFill opens a fill export from size=SIZE and value=BYTE.
func openFill(opts export.Options) (export.Backend, error) {
	if err := opts.Check("fill", []string{"size", "value"}); err != nil {
		return nil, err
	}
	size, err := opts.Size("size", 1<<20)
	if err != nil {
		return nil, fmt.Errorf("fill: %w", err)
	}
	value, err := strconv.ParseUint(opts["value"], 0, 8)
	if err != nil {
		return nil, fmt.Errorf("fill: invalid value=%q: give a byte such as 0x5a", opts["value"])
	}
	return &fillBackend{size: size, value: byte(value)}, nil
}

// Plugins register themselves in init, so that importing the package
// makes the driver available to gonbd's -f and --image-opts driver=.
func init() {
	export.Register(export.Plugin{
		Name:        "fill",
		Description: "read-only disk of one repeated byte (size=SIZE, value=BYTE)",
		Keys:        []string{"size", "value"},
		Open:        openFill,
	})
}

func ExampleRegister() {
	opts, err := export.ParseOptions("size=64K,value=0x5a")
	if err != nil {
		log.Fatal(err)
	}
	backend, err := export.Open("fill", opts)
	if err != nil {
		log.Fatal(err)
	}

	srv, err := nbd.NewServer(nbd.ServerConfig{
		Exports:    []*nbd.Export{{Name: "fill", Backend: backend}},
		Persistent: true,
	})
	if err != nil {
		log.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(context.Background(), l) }()

	c, err := nbd.Dial(context.Background(), "nbd://"+l.Addr().String()+"/fill")
	if err != nil {
		log.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := c.ReadAt(buf, 1000); err != nil {
		log.Fatal(err)
	}
	_, writeErr := c.WriteAt(buf, 0)
	fmt.Printf("size %d, read % x, write rejected: %v\n", c.Size(), buf, writeErr != nil)
	c.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		log.Fatal(err)
	}
	if err := <-served; !errors.Is(err, nbd.ErrServerClosed) {
		log.Fatal(err)
	}
	// Output: size 65536, read 5a 5a 5a 5a, write rejected: true
}
