package qcow2

import (
	"container/list"
	"sync"
)

// tableCache is a bounded LRU cache of one-cluster metadata tables (L2
// tables or refcount blocks) keyed by their host offset. Its own mutex
// lets readers that share the image's metadata lock fill it concurrently.
// Callers change a cached table only while holding the image's metadata
// lock exclusively, so readers never see a table half updated.
type tableCache struct {
	mu      sync.Mutex
	max     int
	entries map[int64]*list.Element
	lru     list.List // front is most recently used
}

type cacheEntry struct {
	off   int64
	table []byte
}

func newTableCache(max int) *tableCache {
	return &tableCache{max: max, entries: make(map[int64]*list.Element, max)}
}

// get returns the cached table at off, or nil.
func (c *tableCache) get(off int64) []byte {
	c.mu.Lock()
	defer c.mu.Unlock()

	e, ok := c.entries[off]
	if !ok {
		return nil
	}
	c.lru.MoveToFront(e)
	return e.Value.(*cacheEntry).table
}

// put stores table under off, evicting the least recently used table when
// the cache is full, and returns the table now cached at off (another
// goroutine may have stored it first).
func (c *tableCache) put(off int64, table []byte) []byte {
	c.mu.Lock()
	defer c.mu.Unlock()

	if e, ok := c.entries[off]; ok {
		c.lru.MoveToFront(e)
		return e.Value.(*cacheEntry).table
	}
	if c.lru.Len() >= c.max {
		old := c.lru.Back()
		c.lru.Remove(old)
		delete(c.entries, old.Value.(*cacheEntry).off)
		// NOTE: an evicted buffer is not reused because a reader holding
		// the metadata lock shared may still be reading it.
	}
	c.entries[off] = c.lru.PushFront(&cacheEntry{off: off, table: table})
	return table
}

// drop removes the table at off from the cache after its cluster was freed.
func (c *tableCache) drop(off int64) {
	c.mu.Lock()
	defer c.mu.Unlock()

	if e, ok := c.entries[off]; ok {
		c.lru.Remove(e)
		delete(c.entries, off)
	}
}
