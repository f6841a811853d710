// Package protocol is the one definition of what travels between the gateway and an edge.
//
// One SSH connection per edge carries one SSH channel of type ChannelType. The edge opens it
// and puts its Hello in the channel-open extra data; the gateway accepts it and runs a yamux
// session over it. Only the gateway opens yamux streams: one stream per RPC.
//
// A stream is a sequence of frames: one type byte, a big-endian uint32 length, then the
// payload. The gateway writes a FrameRequest (JSON Request), then for methods that carry a
// body (stdin, file content) FrameData frames ending with an empty FrameData. The edge answers
// with FrameStdout/FrameStderr/FrameData frames as the method produces them and ends with one
// FrameResult (JSON Response). The gateway may send FrameCancel, or close its side, at any time
// before the result: the edge then stops the work.
//
// Every size is bounded (MaxJSONFrame, MaxDataFrame) and every message carries the protocol
// version, so an old edge and a new gateway can tell each other apart.
package protocol
