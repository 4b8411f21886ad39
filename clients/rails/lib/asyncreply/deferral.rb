# frozen_string_literal: true

module Asyncreply
  # What a deferral asks of the gateway for the operation it creates, in
  # whole seconds: +timeout+ bounds one replay, +retention+ is how long the
  # finished response is kept, +wait+ how long the client's request waits
  # for it before the 202. Those left nil are the gateway's own settings.
  # Durations such as <tt>1.hour</tt> are accepted.
  class Deferral
    PARAMETERS = %i[timeout retention wait].freeze

    # The deferral a <tt>render ..., async:</tt> option asks for: none for
    # +false+ or +nil+, the gateway's settings for +true+, the given ones for
    # a Hash (<tt>async: { timeout: 1.hour }</tt>).
    def self.from_async_option(value)
      case value
      when true then new
      when false, nil then nil
      when Hash then new(**value.symbolize_keys)
      else
        raise ArgumentError, "async: must be true, false or a Hash of #{PARAMETERS.join(', ')}, not #{value.inspect}"
      end
    end

    attr_reader :timeout, :retention, :wait

    def initialize(timeout: nil, retention: nil, wait: nil)
      @timeout = seconds(:timeout, timeout, minimum: 1)
      @retention = seconds(:retention, retention, minimum: 1)
      @wait = seconds(:wait, wait, minimum: 0)
      freeze
    end

    # The Asyncreply-Defer header's value, with the parameters that were
    # given: <tt>1; timeout=3600; wait=2</tt>.
    def header_value
      ["1", *to_h.map { |name, value| "#{name}=#{value}" }].join("; ")
    end

    # The parameters that were given.
    def to_h
      { timeout: timeout, retention: retention, wait: wait }.compact
    end

    private
      def seconds(name, value, minimum:)
        return if value.nil?

        seconds = value.is_a?(ActiveSupport::Duration) ? value.to_i : value
        unless seconds.is_a?(Integer) && seconds >= minimum
          raise ArgumentError, "#{name}: must be a whole number of seconds, at least #{minimum}, not #{value.inspect}"
        end

        seconds
      end
  end
end
