package hub

// deque is a growable ring buffer. The zero value is empty and ready to use.
type deque[T any] struct {
	buf  []T // len is zero or a power of two
	head int
	n    int
}

func (d *deque[T]) len() int { return d.n }

// at returns the i-th element from the front, 0 <= i < d.len().
func (d *deque[T]) at(i int) *T { return &d.buf[(d.head+i)&(len(d.buf)-1)] }

func (d *deque[T]) front() *T { return d.at(0) }

func (d *deque[T]) back() *T { return d.at(d.n - 1) }

func (d *deque[T]) pushBack(v T) {
	if d.n == len(d.buf) {
		d.grow()
	}
	d.buf[(d.head+d.n)&(len(d.buf)-1)] = v
	d.n++
}

func (d *deque[T]) popFront() {
	var zero T
	*d.at(0) = zero // release references for the garbage collector
	d.head = (d.head + 1) & (len(d.buf) - 1)
	d.n--
}

func (d *deque[T]) popBack() {
	var zero T
	*d.at(d.n - 1) = zero
	d.n--
}

func (d *deque[T]) grow() {
	buf := make([]T, max(8, 2*len(d.buf)))
	for i := 0; i < d.n; i++ {
		buf[i] = *d.at(i)
	}
	d.buf, d.head = buf, 0
}
