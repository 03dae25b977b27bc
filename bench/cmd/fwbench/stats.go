package main

import (
	"fmt"
	"math"
	"sort"
)

// Sample is a set of repeated measurements of one quantity.
type Sample []float64

// Median is the middle value (mean of the two middle ones for an even count).
func (s Sample) Median() float64 {
	if len(s) == 0 {
		return math.NaN()
	}
	c := append(Sample(nil), s...)
	sort.Float64s(c)
	n := len(c)
	if n%2 == 1 {
		return c[n/2]
	}
	return (c[n/2-1] + c[n/2]) / 2
}

// Min is the smallest value.
func (s Sample) Min() float64 {
	m := math.Inf(1)
	for _, v := range s {
		m = math.Min(m, v)
	}
	return m
}

// Max is the largest value.
func (s Sample) Max() float64 {
	m := math.Inf(-1)
	for _, v := range s {
		m = math.Max(m, v)
	}
	return m
}

// Format prints "median (min–max, n=N)" with the given verb for each number.
func (s Sample) Format(verb string) string {
	if len(s) == 0 {
		return "n/a"
	}
	if len(s) == 1 {
		return fmt.Sprintf(verb+" (n=1)", s[0])
	}
	return fmt.Sprintf(verb+" ("+verb+"–"+verb+", n=%d)", s.Median(), s.Min(), s.Max(), len(s))
}

// percentile is the nearest-rank q-quantile (0 < q <= 1) of values.
func percentile(values []float64, q float64) float64 {
	if len(values) == 0 {
		return math.NaN()
	}
	c := append([]float64(nil), values...)
	sort.Float64s(c)
	rank := int(math.Ceil(q*float64(len(c)))) - 1
	return c[max(0, min(rank, len(c)-1))]
}
