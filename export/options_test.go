package export

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseSize(t *testing.T) {
	tests := []struct {
		in   string
		want int64
	}{
		{"0", 0},
		{"512", 512},
		{"512b", 512},
		{"1K", 1 << 10},
		{"1k", 1 << 10},
		{"64M", 64 << 20},
		{"1G", 1 << 30},
		{"2T", 2 << 40},
		{"1P", 1 << 50},
		{"7E", 7 << 60},
		{"1.5G", 3 << 29},
		{"0.5K", 512},
		{"9223372036854775807", 1<<63 - 1},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseSize(tt.in)
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
		})
	}
}

func TestParseSizeErrors(t *testing.T) {
	tests := []struct {
		name, in, msg string
	}{
		{"Empty", "", "empty size"},
		{"NoDigits", "G", "invalid size"},
		{"Negative", "-1", "invalid size"},
		{"UnknownSuffix", "1X", "invalid size"},
		{"TwoSuffixes", "1GG", "invalid size"},
		{"Hex", "0x10", "invalid size"},
		{"Space", "1 G", "invalid size"},
		{"FractionWithoutSuffix", "1.5", "needs a K, M, G or T suffix"},
		{"FractionBytes", "1.5B", "needs a K, M, G or T suffix"},
		{"EmptyFraction", "1.G", "invalid size"},
		{"OverflowInt64", "9223372036854775808", "exceeds the maximum"},
		{"OverflowSuffix", "8E", "exceeds the maximum"},
		{"OverflowFraction", "7.99999999999999999999E", "exceeds the maximum"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseSize(tt.in)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.msg)
		})
	}
}

func TestParseOptions(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want Options
	}{
		{"Empty", "", Options{}},
		{"One", "driver=memory", Options{"driver": "memory"}},
		{"Two", "driver=memory,size=1G", Options{"driver": "memory", "size": "1G"}},
		{"EscapedComma", "filename=a,,b.img,driver=file", Options{"filename": "a,b.img", "driver": "file"}},
		{"EmptyValue", "x=", Options{"x": ""}},
		{"EqualsInValue", "x=a=b", Options{"x": "a=b"}},
		{"LastWins", "x=1,x=2", Options{"x": "2"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseOptions(tt.in)
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
		})
	}
}

func TestParseOptionsErrors(t *testing.T) {
	tests := []struct {
		name, in, msg string
	}{
		{"BareKey", "memory", "expected key=value"},
		{"EmptyKey", "=1", "empty key"},
		{"TrailingComma", "size=1G,", "expected key=value"},
		{"BareSecondKey", "a=1,b", "expected key=value"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseOptions(tt.in)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.msg)
		})
	}
}

func TestOptionsCheckUnknownKey(t *testing.T) {
	err := Options{"size": "1G", "colour": "red"}.Check("memory", []string{"size"})
	require.Error(t, err)
	assert.Equal(t, `memory: unknown option "colour" (valid: size)`, err.Error())
}

func TestOptionsCheckCommonKeys(t *testing.T) {
	err := Options{"size": "1G", "read-only": "on", "cache": "none"}.Check("memory", []string{"size"})
	assert.NoError(t, err)
}

func TestOptionsBool(t *testing.T) {
	for in, want := range map[string]bool{"on": true, "yes": true, "true": true, "off": false, "no": false, "false": false} {
		got, err := Options{"ro": in}.Bool("ro", !want)
		require.NoError(t, err, in)
		assert.Equal(t, want, got, in)
	}

	got, err := Options{}.Bool("ro", true)
	require.NoError(t, err)
	assert.True(t, got)

	_, err = Options{"ro": "maybe"}.Bool("ro", false)
	assert.EqualError(t, err, `invalid ro="maybe": use on or off`)
}

func TestOptionsChoice(t *testing.T) {
	got, err := Options{}.Choice("cache", "writeback", "none", "writeback")
	require.NoError(t, err)
	assert.Equal(t, "writeback", got)

	_, err = Options{"cache": "fast"}.Choice("cache", "writeback", "none", "writeback")
	assert.EqualError(t, err, `invalid cache="fast": use one of none, writeback`)
}

func FuzzParseSize(f *testing.F) {
	for _, s := range []string{"0", "1G", "1.5T", "512b", "8E", "1.", ".5K", "99999999999999999999K", "7.9999999999999999999E"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseSize(s)
		if err == nil && n < 0 {
			t.Fatalf("ParseSize(%q) = %d, a negative size", s, n)
		}
	})
}

func FuzzParseOptions(f *testing.F) {
	for _, s := range []string{"driver=memory,size=1G", "filename=a,,b", "a", "=", ",,", "a=1,", "x=a=b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		opts, err := ParseOptions(s)
		if err != nil {
			return
		}
		for k := range opts {
			if k == "" {
				t.Fatalf("ParseOptions(%q) returned an empty key", s)
			}
		}
	})
}

func TestOptionsMultiConn(t *testing.T) {
	on, err := Options{}.MultiConn()
	require.NoError(t, err)
	assert.True(t, on, "multi-conn defaults to on")

	on, err = Options{"multi-conn": "off"}.MultiConn()
	require.NoError(t, err)
	assert.False(t, on)

	_, err = Options{"multi-conn": "auto"}.MultiConn()
	assert.ErrorContains(t, err, `invalid multi-conn="auto": use on or off`)
}
