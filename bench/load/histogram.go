package load

import (
	"math"
	"math/bits"
	"sync/atomic"
	"time"
)

// subBits sets the histogram's precision: every power of two is split into
// 2^(subBits-1) linear buckets, so a recorded value is known to within
// 1/64 (1.6%) of itself, from a nanosecond to centuries, in a fixed array.
const (
	subBits    = 7
	subCount   = 1 << subBits
	halfCount  = subCount / 2
	maxShift   = 64 - subBits
	numBuckets = (maxShift + 2) * halfCount
)

// Histogram records durations in logarithmic buckets, as HdrHistogram does,
// so that high percentiles of millions of samples cost neither memory nor a
// sort. Record is safe for concurrent use and never blocks.
type Histogram struct {
	counts [numBuckets]atomic.Uint64
	count  atomic.Uint64
	sum    atomic.Int64
	min    atomic.Int64 // math.MaxInt64 until the first value; use Min
	max    atomic.Int64
}

// NewHistogram returns an empty histogram.
func NewHistogram() *Histogram {
	h := &Histogram{}
	h.min.Store(math.MaxInt64)
	return h
}

func bucketOf(v uint64) int {
	shift := max(bits.Len64(v)-subBits, 0)
	return shift*halfCount + int(v>>shift)
}

// bucketHigh is the largest value that falls in bucket i.
func bucketHigh(i int) int64 {
	if i < subCount {
		return int64(i)
	}
	shift := i/halfCount - 1
	low := uint64(i-shift*halfCount) << shift
	return int64(low + (1 << shift) - 1)
}

// Record adds one value; negative durations count as zero.
func (h *Histogram) Record(d time.Duration) {
	v := max(int64(d), 0)
	h.counts[bucketOf(uint64(v))].Add(1)
	h.count.Add(1)
	h.sum.Add(v)
	for cur := h.min.Load(); v < cur && !h.min.CompareAndSwap(cur, v); cur = h.min.Load() {
	}
	for cur := h.max.Load(); v > cur && !h.max.CompareAndSwap(cur, v); cur = h.max.Load() {
	}
}

// Count is the number of values recorded.
func (h *Histogram) Count() uint64 { return h.count.Load() }

// Max is the largest value recorded, exactly.
func (h *Histogram) Max() time.Duration { return time.Duration(h.max.Load()) }

// Min is the smallest value recorded, exactly; 0 when there is none.
func (h *Histogram) Min() time.Duration {
	if h.Count() == 0 {
		return 0
	}
	return time.Duration(h.min.Load())
}

// Mean is the average of the values recorded; 0 when there is none.
func (h *Histogram) Mean() time.Duration {
	n := h.Count()
	if n == 0 {
		return 0
	}
	return time.Duration(h.sum.Load() / int64(n))
}

// Quantile returns the value below which a fraction q of the recorded values
// fall, as the top of its bucket (never above Max): at most 1.6% high.
// It returns 0 for an empty histogram.
func (h *Histogram) Quantile(q float64) time.Duration {
	n := h.Count()
	if n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(n)))
	rank = min(max(rank, 1), n)
	var seen uint64
	for i := range h.counts {
		seen += h.counts[i].Load()
		if seen >= rank {
			return min(time.Duration(bucketHigh(i)), h.Max())
		}
	}
	return h.Max()
}

// Merge adds every value recorded in other to h. It is not atomic with
// respect to concurrent Records on other.
func (h *Histogram) Merge(other *Histogram) {
	for i := range other.counts {
		if c := other.counts[i].Load(); c > 0 {
			h.counts[i].Add(c)
		}
	}
	if other.Count() == 0 {
		return
	}
	h.count.Add(other.Count())
	h.sum.Add(other.sum.Load())
	v := other.min.Load()
	for cur := h.min.Load(); v < cur && !h.min.CompareAndSwap(cur, v); cur = h.min.Load() {
	}
	v = other.max.Load()
	for cur := h.max.Load(); v > cur && !h.max.CompareAndSwap(cur, v); cur = h.max.Load() {
	}
}
