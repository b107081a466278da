package netnstest

import (
	"encoding/json"
	"fmt"
	"math"
)

// IperfIntervals reads iperf3's JSON report (-J) and returns the bit rate received in each
// interval (bit/s), in order; an error names iperf3's own error when it reported one.
func IperfIntervals(report []byte) ([]float64, error) {
	var res struct {
		Error     string `json:"error"`
		Intervals []struct {
			Sum struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum"`
		} `json:"intervals"`
	}
	if err := json.Unmarshal(report, &res); err != nil {
		return nil, fmt.Errorf("iperf3 report: %w", err)
	}
	if res.Error != "" {
		return nil, fmt.Errorf("iperf3: %s", res.Error)
	}
	out := make([]float64, len(res.Intervals))
	for i, iv := range res.Intervals {
		out[i] = iv.Sum.BitsPerSecond
	}
	return out, nil
}

// MeanMbps is the mean of xs[from:to] (bit/s) in Mbit/s; NaN when the range is empty.
func MeanMbps(xs []float64, from, to int) float64 {
	to = min(to, len(xs))
	if from >= to {
		return math.NaN()
	}
	s := 0.0
	for _, x := range xs[from:to] {
		s += x
	}
	return s / float64(to-from) / 1e6
}
